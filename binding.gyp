{
  "targets": [
    {
      "target_name": "ambient_native",
      "sources": ["native/addon.cc", "native/netns_thread.cc", "native/sockdiag.cc"],
      "include_dirs": [
        "<!(node -e \"require('nan')\")",
        "<!@(pkg-config --cflags-only-I libbpf | sed -e 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs libbpf)"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-cast-function-type"],
      "cflags_cc": ["-std=gnu++17"],
      "defines": ["_GNU_SOURCE"]
    }
  ]
}
