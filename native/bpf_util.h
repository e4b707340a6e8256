// SPDX-License-Identifier: Apache-2.0
//
// Small checks on BPF fds shared by bpf_fds.cc and bpf_links.cc.
#ifndef AMBIENT_BPF_UTIL_H
#define AMBIENT_BPF_UTIL_H

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cstddef>
#include <string>

namespace ambient {

// Checks that fd is open and, when /proc tells us, that it is the wanted kind
// of BPF object ("bpf-map", "bpf-prog", "bpf-link"). 0 or a negative errno.
int CheckBpfFd(int fd, const char* kind);

// bpf_map_info of a map fd (checked to be a map). 0 or -errno.
int GetMapInfo(int fd, struct bpf_map_info* mi);

// Bytes the kernel copies to/from user space for one value of this map.
size_t ValueBytes(const struct bpf_map_info& mi);

// A program tag as bpftool prints it (16 hex digits).
std::string TagHex(const unsigned char* t);

}  // namespace ambient

#endif
