// SPDX-License-Identifier: Apache-2.0
#include "bpf_util.h"

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "args.h"

namespace ambient {

int CheckBpfFd(int fd, const char* kind) {
  if (fcntl(fd, F_GETFD) < 0) return NegErrno();
  char link[64], target[128];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n < 0) return 0;  // no /proc: let the kernel decide
  target[n] = '\0';
  std::string want = std::string("anon_inode:") + kind;
  // links are "bpf_link" from bpf_link_create but "bpf-link" from bpf_obj_get
  std::string alt = want;
  for (char& ch : alt)
    if (ch == '-') ch = '_';
  return want == target || alt == target ? 0 : -EINVAL;
}

int GetMapInfo(int fd, struct bpf_map_info* mi) {
  int r = CheckBpfFd(fd, "bpf-map");
  if (r < 0) return r;
  memset(mi, 0, sizeof *mi);
  __u32 len = sizeof *mi;
  r = bpf_obj_get_info_by_fd(fd, mi, &len);
  return r < 0 ? r : 0;
}

size_t ValueBytes(const struct bpf_map_info& mi) {
  switch (mi.type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: {
      int ncpu = libbpf_num_possible_cpus();
      if (ncpu <= 0) return 0;
      return static_cast<size_t>((mi.value_size + 7) / 8 * 8) * static_cast<size_t>(ncpu);
    }
    default:
      return mi.value_size;
  }
}

std::string TagHex(const unsigned char* t) {
  char out[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(out + 2 * i, 3, "%02x", t[i]);
  return out;
}

}  // namespace ambient
