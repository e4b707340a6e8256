// SPDX-License-Identifier: Apache-2.0
//
// Kernel feature probes. Names are libbpf's own (libbpf_bpf_*_type_str).

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "args.h"
#include "bindings.h"

namespace ambient {
namespace {

int ProgTypeByName(const std::string& name) {
  for (int t = 0; t < 256; t++) {
    const char* s = libbpf_bpf_prog_type_str(static_cast<enum bpf_prog_type>(t));
    if (s && name == s) return t;
  }
  return -1;
}

int MapTypeByName(const std::string& name) {
  for (int t = 0; t < 256; t++) {
    const char* s = libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(t));
    if (s && name == s) return t;
  }
  return -1;
}

// libbpf 1.1's libbpf_probe_bpf_helper() only recognises the verifier's
// older wording ("unknown func ..."); since Linux 6.x the verifier says
// "program of this type cannot use helper ...", which libbpf 1.1 reports as
// supported. When libbpf says 1, the same probe program (call helper; exit)
// is loaded again here and that wording is checked too. Any other failure is
// "assume supported", exactly as libbpf does.
int ConfirmHelper(enum bpf_prog_type type, int helper) {
  struct bpf_insn insns[2];
  memset(insns, 0, sizeof insns);
  insns[0].code = BPF_JMP | BPF_CALL;
  insns[0].imm = helper;
  insns[1].code = BPF_JMP | BPF_EXIT;
  char log[4096];
  log[0] = '\0';
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.log_level = 1;
  opts.log_size = sizeof log;
  opts.log_buf = log;
  switch (type) {  // as libbpf's probe_prog_load()
    case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
      opts.expected_attach_type = BPF_CGROUP_INET4_CONNECT;
      break;
    case BPF_PROG_TYPE_CGROUP_SOCKOPT:
      opts.expected_attach_type = BPF_CGROUP_GETSOCKOPT;
      break;
    case BPF_PROG_TYPE_SK_LOOKUP:
      opts.expected_attach_type = BPF_SK_LOOKUP;
      break;
    case BPF_PROG_TYPE_LIRC_MODE2:
      opts.expected_attach_type = BPF_LIRC_MODE2;
      break;
    case BPF_PROG_TYPE_SYSCALL:
      opts.prog_flags = BPF_F_SLEEPABLE;
      break;
    default:
      break;
  }
  int fd = bpf_prog_load(type, nullptr, "GPL", insns, 2, &opts);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
  log[sizeof log - 1] = '\0';
  if (strstr(log, "invalid func ") || strstr(log, "unknown func ") ||
      strstr(log, "program of this type cannot use helper "))
    return 0;
  return 1;
}

NAN_METHOD(ProbeProgType) {
  std::string name;
  if (!GetString(info, 0, "probeProgType", "name", &name)) return;
  int t = ProgTypeByName(name);
  if (t < 0) return Ret(info, -EINVAL);
  Ret(info, libbpf_probe_bpf_prog_type(static_cast<enum bpf_prog_type>(t), nullptr));
}

NAN_METHOD(ProbeMapType) {
  std::string name;
  if (!GetString(info, 0, "probeMapType", "name", &name)) return;
  int t = MapTypeByName(name);
  if (t < 0) return Ret(info, -EINVAL);
  Ret(info, libbpf_probe_bpf_map_type(static_cast<enum bpf_map_type>(t), nullptr));
}

// A cgroup sock_addr attach type is supported when a trivial program
// (r0 = 1; exit) loads with it as expected_attach_type.
NAN_METHOD(ProbeAttach) {
  std::string name;
  if (!GetString(info, 0, "probeAttach", "attachType", &name)) return;
  enum bpf_attach_type at;
  if (name == "connect4")
    at = BPF_CGROUP_INET4_CONNECT;
  else if (name == "connect6")
    at = BPF_CGROUP_INET6_CONNECT;
  else if (name == "getpeername4")
    at = BPF_CGROUP_INET4_GETPEERNAME;
  else if (name == "getpeername6")
    at = BPF_CGROUP_INET6_GETPEERNAME;
  else
    return Ret(info, -EINVAL);
  struct bpf_insn insns[2];
  memset(insns, 0, sizeof insns);
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 1
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = 1;
  insns[1].code = BPF_JMP | BPF_EXIT;
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.expected_attach_type = at;
  int fd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr, "GPL", insns, 2, &opts);
  if (fd >= 0) {
    close(fd);
    return Ret(info, 1);
  }
  int err = errno;
  if (err == EPERM || err == EACCES) return Ret(info, -err);
  Ret(info, 0);
}

NAN_METHOD(ProbeHelper) {
  std::string name;
  double id;
  if (!GetString(info, 0, "probeHelper", "progType", &name)) return;
  if (!GetNumber(info, 1, "probeHelper", "helperId", &id)) return;
  int t = ProgTypeByName(name);
  if (t < 0 || !IsInt(id, 0, INT32_MAX)) return Ret(info, -EINVAL);
  int r = libbpf_probe_bpf_helper(static_cast<enum bpf_prog_type>(t),
                                  static_cast<enum bpf_func_id>(static_cast<int>(id)), nullptr);
  if (r == 1) r = ConfirmHelper(static_cast<enum bpf_prog_type>(t), static_cast<int>(id));
  Ret(info, r);
}

}  // namespace

void RegisterBpfProbes(Target target) {
  Nan::SetMethod(target, "probeProgType", ProbeProgType);
  Nan::SetMethod(target, "probeMapType", ProbeMapType);
  Nan::SetMethod(target, "probeHelper", ProbeHelper);
  Nan::SetMethod(target, "probeAttach", ProbeAttach);
}

}  // namespace ambient
