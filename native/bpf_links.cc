// SPDX-License-Identifier: Apache-2.0
//
// Attachments: bpf links on cgroups (connect4/6, bind4/6, sockops, getpeername4/6) and
// on network namespaces (sk_lookup), their update and info, and the sk_msg
// program on the sockhash (a prog attach: sk_msg has no link type).

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "args.h"
#include "bindings.h"
#include "bpf_util.h"

namespace ambient {
namespace {

NAN_METHOD(LinkCgroup) {
  double d;
  std::string path, type;
  int prog;
  if (!GetNumber(info, 0, "linkCgroup", "progFd", &d)) return;
  if (!GetString(info, 1, "linkCgroup", "cgroupPath", &path)) return;
  if (!GetString(info, 2, "linkCgroup", "attachType", &type)) return;
  if (!ToFd(d, &prog)) return Ret(info, -EBADF);
  enum bpf_attach_type at;
  if (type == "connect4")
    at = BPF_CGROUP_INET4_CONNECT;
  else if (type == "connect6")
    at = BPF_CGROUP_INET6_CONNECT;
  else if (type == "sockops")
    at = BPF_CGROUP_SOCK_OPS;
  else if (type == "getpeername4")
    at = BPF_CGROUP_INET4_GETPEERNAME;
  else if (type == "getpeername6")
    at = BPF_CGROUP_INET6_GETPEERNAME;
  else if (type == "bind4")
    at = BPF_CGROUP_INET4_BIND;
  else if (type == "bind6")
    at = BPF_CGROUP_INET6_BIND;
  else
    return Ret(info, -EINVAL);
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  int cg = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) return Ret(info, NegErrno());
  int link = bpf_link_create(prog, cg, at, nullptr);
  close(cg);
  Ret(info, link);
}

NAN_METHOD(LinkNetns) {
  double d;
  std::string path;
  int prog;
  if (!GetNumber(info, 0, "linkNetns", "progFd", &d)) return;
  if (!GetString(info, 1, "linkNetns", "netnsPath", &path)) return;
  if (!ToFd(d, &prog)) return Ret(info, -EBADF);
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) return Ret(info, NegErrno());
  int link = bpf_link_create(prog, ns, BPF_SK_LOOKUP, nullptr);
  close(ns);
  Ret(info, link);
}

NAN_METHOD(LinkDetach) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "linkDetach", "linkFd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int r = bpf_link_detach(fd);
  Ret(info, r < 0 ? r : 0);
}

// linkUpdate(linkFd, progFd): bpf_link_update, atomically replaces the program
// of a link (an agent upgrade swaps in its own build without a gap).
NAN_METHOD(LinkUpdate) {
  double l, p;
  int lfd, pfd;
  if (!GetNumber(info, 0, "linkUpdate", "linkFd", &l)) return;
  if (!GetNumber(info, 1, "linkUpdate", "progFd", &p)) return;
  if (!ToFd(l, &lfd) || !ToFd(p, &pfd)) return Ret(info, -EBADF);
  int r = CheckBpfFd(lfd, "bpf-link");
  if (r < 0) return Ret(info, r);
  r = CheckBpfFd(pfd, "bpf-prog");
  if (r < 0) return Ret(info, r);
  r = bpf_link_update(lfd, pfd, nullptr);
  Ret(info, r < 0 ? r : 0);
}

// linkInfo(linkFd): { id, type, progId, progTag } ("" when the program is not readable).
NAN_METHOD(LinkInfo) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "linkInfo", "linkFd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int r = CheckBpfFd(fd, "bpf-link");
  if (r < 0) return Ret(info, r);
  struct bpf_link_info li;
  memset(&li, 0, sizeof li);
  __u32 len = sizeof li;
  r = bpf_obj_get_info_by_fd(fd, &li, &len);
  if (r < 0) return Ret(info, r);
  std::string tag;
  int pfd = bpf_prog_get_fd_by_id(li.prog_id);
  if (pfd >= 0) {
    struct bpf_prog_info pi;
    memset(&pi, 0, sizeof pi);
    __u32 plen = sizeof pi;
    if (bpf_obj_get_info_by_fd(pfd, &pi, &plen) == 0) tag = TagHex(pi.tag);
    close(pfd);
  }
  v8::Local<v8::Object> o = Nan::New<v8::Object>();
  SetProp(o, "id", Nan::New<v8::Uint32>(li.id));
  SetProp(o, "type", Nan::New<v8::Uint32>(li.type));
  SetProp(o, "progId", Nan::New<v8::Uint32>(li.prog_id));
  SetProp(o, "progTag", Nan::New(tag).ToLocalChecked());
  // a netns link (sk_lookup): the inode of the netns it is attached to (0 once that netns is gone)
  if (li.type == BPF_LINK_TYPE_NETNS) SetProp(o, "netnsIno", Nan::New<v8::Uint32>(li.netns.netns_ino));
  info.GetReturnValue().Set(o);
}

void SkMsg(const Info& info, const char* fn, bool attach) {
  double p, m;
  int prog, map;
  if (!GetNumber(info, 0, fn, "progFd", &p)) return;
  if (!GetNumber(info, 1, fn, "mapFd", &m)) return;
  if (!ToFd(p, &prog) || !ToFd(m, &map)) return Ret(info, -EBADF);
  int r = attach ? bpf_prog_attach(prog, map, BPF_SK_MSG_VERDICT, 0) : bpf_prog_detach2(prog, map, BPF_SK_MSG_VERDICT);
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(AttachSkMsg) { SkMsg(info, "attachSkMsg", true); }
NAN_METHOD(DetachSkMsg) { SkMsg(info, "detachSkMsg", false); }

}  // namespace

void RegisterBpfLinks(Target target) {
  Nan::SetMethod(target, "linkCgroup", LinkCgroup);
  Nan::SetMethod(target, "linkNetns", LinkNetns);
  Nan::SetMethod(target, "linkDetach", LinkDetach);
  Nan::SetMethod(target, "linkUpdate", LinkUpdate);
  Nan::SetMethod(target, "linkInfo", LinkInfo);
  Nan::SetMethod(target, "attachSkMsg", AttachSkMsg);
  Nan::SetMethod(target, "detachSkMsg", DetachSkMsg);
}

}  // namespace ambient
