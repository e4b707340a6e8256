{
  "targets": [
    {
      "target_name": "ambient_native",
      "sources": [
        "native/addon.cc", "native/bpf_object.cc", "native/bpf_util.cc", "native/bpf_fds.cc", "native/bpf_links.cc",
        "native/bpf_probes.cc", "native/netns_socket.cc", "native/identity.cc", "native/fd_passing.cc",
        "native/sock_info.cc", "native/sockdiag_binding.cc", "native/netns_thread.cc", "native/sockdiag.cc",
        "native/return_path.cc"
      ],
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
