// SPDX-License-Identifier: Apache-2.0
//
// Pins, fds, BPF object info and map elements. Map element sizes are checked
// against the map's own key/value sizes: the kernel reads/writes exactly that
// many bytes through our pointers.

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

// Pins and fds.

NAN_METHOD(ObjPin) {
  double d;
  std::string path;
  int fd;
  if (!GetNumber(info, 0, "objPin", "fd", &d)) return;
  if (!GetString(info, 1, "objPin", "path", &path)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  int r = bpf_obj_pin(fd, path.c_str());
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(ObjGet) {
  std::string path;
  if (!GetString(info, 0, "objGet", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  int fd = bpf_obj_get(path.c_str());  // bpf(2) fds are always O_CLOEXEC
  Ret(info, fd);
}

NAN_METHOD(CloseFd) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "closeFd", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  Ret(info, close(fd) < 0 ? NegErrno() : 0);
}

// A second fd for the same open file (F_DUPFD_CLOEXEC): a data-plane worker
// serves its own copy of a listening socket, the control thread keeps its one.
NAN_METHOD(DupFd) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "dupFd", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  Ret(info, r < 0 ? NegErrno() : r);
}

// ---------------------------------------------------------------------------
// Info.

NAN_METHOD(MapInfo) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "mapInfo", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  struct bpf_map_info mi;
  int r = GetMapInfo(fd, &mi);
  if (r < 0) return Ret(info, r);
  v8::Local<v8::Object> o = Nan::New<v8::Object>();
  SetProp(o, "id", Nan::New<v8::Uint32>(mi.id));
  SetProp(o, "name", Nan::New(std::string(mi.name, strnlen(mi.name, sizeof mi.name))).ToLocalChecked());
  SetProp(o, "type", Nan::New<v8::Uint32>(mi.type));
  SetProp(o, "keySize", Nan::New<v8::Uint32>(mi.key_size));
  SetProp(o, "valueSize", Nan::New<v8::Uint32>(mi.value_size));
  SetProp(o, "maxEntries", Nan::New<v8::Uint32>(mi.max_entries));
  SetProp(o, "flags", Nan::New<v8::Uint32>(mi.map_flags));
  SetProp(o, "btfId", Nan::New<v8::Uint32>(mi.btf_id));
  info.GetReturnValue().Set(o);
}

NAN_METHOD(ProgInfo) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "progInfo", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int r = CheckBpfFd(fd, "bpf-prog");
  if (r < 0) return Ret(info, r);
  struct bpf_prog_info pi;
  memset(&pi, 0, sizeof pi);
  __u32 len = sizeof pi;
  r = bpf_obj_get_info_by_fd(fd, &pi, &len);
  if (r < 0) return Ret(info, r);
  std::string tag = TagHex(pi.tag);
  v8::Local<v8::Object> o = Nan::New<v8::Object>();
  SetProp(o, "id", Nan::New<v8::Uint32>(pi.id));
  SetProp(o, "name", Nan::New(std::string(pi.name, strnlen(pi.name, sizeof pi.name))).ToLocalChecked());
  SetProp(o, "type", Nan::New<v8::Uint32>(pi.type));
  SetProp(o, "tag", Nan::New(tag).ToLocalChecked());
  info.GetReturnValue().Set(o);
}

// ---------------------------------------------------------------------------
// Map elements. Sizes are checked against the map's own key/value sizes: the
// kernel reads/writes exactly that many bytes through our pointers.

NAN_METHOD(MapLookup) {
  double d, vs;
  const char* key;
  size_t klen;
  int fd;
  if (!GetNumber(info, 0, "mapLookup", "fd", &d)) return;
  if (!GetBuffer(info, 1, "mapLookup", "key", &key, &klen)) return;
  if (!GetNumber(info, 2, "mapLookup", "valueSize", &vs)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (klen == 0 || !IsInt(vs, 1, INT32_MAX)) return Ret(info, -EINVAL);
  struct bpf_map_info mi;
  int r = GetMapInfo(fd, &mi);
  if (r < 0) return Ret(info, r);
  if (klen != mi.key_size || static_cast<size_t>(vs) != ValueBytes(mi)) return Ret(info, -EINVAL);
  v8::Local<v8::Object> buf;
  if (!Nan::NewBuffer(static_cast<uint32_t>(vs)).ToLocal(&buf)) return;  // exception pending
  r = bpf_map_lookup_elem(fd, key, node::Buffer::Data(buf));
  if (r < 0) return Ret(info, r);
  info.GetReturnValue().Set(buf);
}

NAN_METHOD(MapUpdate) {
  double d, fl;
  const char *key, *val;
  size_t klen, vlen;
  int fd;
  if (!GetNumber(info, 0, "mapUpdate", "fd", &d)) return;
  if (!GetBuffer(info, 1, "mapUpdate", "key", &key, &klen)) return;
  if (!GetBuffer(info, 2, "mapUpdate", "value", &val, &vlen)) return;
  if (!GetNumber(info, 3, "mapUpdate", "flags", &fl)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (klen == 0 || vlen == 0 || !IsInt(fl, 0, UINT32_MAX)) return Ret(info, -EINVAL);
  struct bpf_map_info mi;
  int r = GetMapInfo(fd, &mi);
  if (r < 0) return Ret(info, r);
  if (klen != mi.key_size || vlen != ValueBytes(mi)) return Ret(info, -EINVAL);
  r = bpf_map_update_elem(fd, key, val, static_cast<__u64>(fl));
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(MapDelete) {
  double d;
  const char* key;
  size_t klen;
  int fd;
  if (!GetNumber(info, 0, "mapDelete", "fd", &d)) return;
  if (!GetBuffer(info, 1, "mapDelete", "key", &key, &klen)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (klen == 0) return Ret(info, -EINVAL);
  struct bpf_map_info mi;
  int r = GetMapInfo(fd, &mi);
  if (r < 0) return Ret(info, r);
  if (klen != mi.key_size) return Ret(info, -EINVAL);
  r = bpf_map_delete_elem(fd, key);
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(MapNextKey) {
  double d, ks;
  const char* key = nullptr;
  size_t klen = 0;
  int fd;
  if (!GetNumber(info, 0, "mapNextKey", "fd", &d)) return;
  bool first = info[1]->IsNull() || info[1]->IsUndefined();
  if (!first && !GetBuffer(info, 1, "mapNextKey", "key", &key, &klen)) return;
  if (!GetNumber(info, 2, "mapNextKey", "keySize", &ks)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (!IsInt(ks, 1, INT32_MAX) || (!first && klen == 0)) return Ret(info, -EINVAL);
  struct bpf_map_info mi;
  int r = GetMapInfo(fd, &mi);
  if (r < 0) return Ret(info, r);
  if (static_cast<size_t>(ks) != mi.key_size || (!first && klen != mi.key_size)) return Ret(info, -EINVAL);
  v8::Local<v8::Object> buf;
  if (!Nan::NewBuffer(static_cast<uint32_t>(ks)).ToLocal(&buf)) return;
  r = bpf_map_get_next_key(fd, first ? nullptr : key, node::Buffer::Data(buf));
  if (r < 0) return Ret(info, r);
  info.GetReturnValue().Set(buf);
}

}  // namespace

void RegisterBpfFds(Target target) {
  Nan::SetMethod(target, "objPin", ObjPin);
  Nan::SetMethod(target, "objGet", ObjGet);
  Nan::SetMethod(target, "closeFd", CloseFd);
  Nan::SetMethod(target, "dupFd", DupFd);
  Nan::SetMethod(target, "mapInfo", MapInfo);
  Nan::SetMethod(target, "progInfo", ProgInfo);
  Nan::SetMethod(target, "mapLookup", MapLookup);
  Nan::SetMethod(target, "mapUpdate", MapUpdate);
  Nan::SetMethod(target, "mapDelete", MapDelete);
  Nan::SetMethod(target, "mapNextKey", MapNextKey);
}

}  // namespace ambient
