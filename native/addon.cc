// SPDX-License-Identifier: Apache-2.0
//
// ambient_native: the thin native layer of ambientd (see
// src/datapath/native-api.d.ts for the exact JS surface).
//
// Conventions:
//   - a wrong JS *type* of an argument throws a TypeError;
//   - every other failure (bad value, kernel or libbpf error) is returned as a
//     negative errno number, never thrown;
//   - every fd returned is close-on-exec and belongs to the caller.
//
// setns() only ever happens on a short-lived thread created by
// socketInNetns() for that one call: never on Node's main thread and never on
// a libuv pool thread (whose namespace would then leak into unrelated work).

#include <nan.h>

#include "netns_thread.h"
#include "sockdiag.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif

namespace {

using Info = Nan::FunctionCallbackInfo<v8::Value>;

// ---------------------------------------------------------------------------
// libbpf log capture: the last ~16 KiB of what libbpf printed (warnings,
// verifier logs). Cleared at the start of objectOpen/objectLoad so lastLog()
// describes the latest of those calls.

constexpr size_t kLogMax = 16 * 1024;
std::mutex g_log_mu;
std::string g_log;
bool g_log_debug = false;  // AMBIENTD_LIBBPF_DEBUG=1 also keeps debug lines

void LogAppend(const char* s, size_t n) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (n >= kLogMax) {
    g_log.assign(s + (n - kLogMax), kLogMax);
    return;
  }
  g_log.append(s, n);
  if (g_log.size() > kLogMax) g_log.erase(0, g_log.size() - kLogMax);
}

void LogClear() {
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log.clear();
}

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG && !g_log_debug) return 0;
  char buf[1024];
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(buf, sizeof buf, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  if (static_cast<size_t>(n) < sizeof buf) {
    LogAppend(buf, static_cast<size_t>(n));
  } else {
    // Verifier logs can be large: format fully, keep the tail.
    std::vector<char> big(static_cast<size_t>(n) + 1);
    vsnprintf(big.data(), big.size(), fmt, args);
    LogAppend(big.data(), static_cast<size_t>(n));
  }
  return n;
}

// ---------------------------------------------------------------------------
// bpf_object handle table.

std::mutex g_obj_mu;
std::map<int, bpf_object*> g_objects;
int g_next_handle = 1;

bpf_object* FindObject(int handle) {
  std::lock_guard<std::mutex> lock(g_obj_mu);
  auto it = g_objects.find(handle);
  return it == g_objects.end() ? nullptr : it->second;
}

// ---------------------------------------------------------------------------
// Argument helpers. Get* functions throw a TypeError and return false on a
// wrong JS type; the caller must then return immediately.

void TypeError(const Info& info, const char* fn, const char* arg, const char* want) {
  std::string msg = std::string(fn) + ": " + arg + " must be " + want;
  Nan::ThrowTypeError(msg.c_str());
}

bool GetString(const Info& info, int i, const char* fn, const char* arg, std::string* out) {
  if (!info[i]->IsString()) {
    TypeError(info, fn, arg, "a string");
    return false;
  }
  Nan::Utf8String s(info[i]);
  out->assign(*s, static_cast<size_t>(s.length()));
  return true;
}

bool GetNumber(const Info& info, int i, const char* fn, const char* arg, double* out) {
  if (!info[i]->IsNumber()) {
    TypeError(info, fn, arg, "a number");
    return false;
  }
  *out = Nan::To<double>(info[i]).FromJust();
  return true;
}

bool GetBuffer(const Info& info, int i, const char* fn, const char* arg, const char** data, size_t* len) {
  if (!node::Buffer::HasInstance(info[i])) {
    TypeError(info, fn, arg, "a Buffer");
    return false;
  }
  v8::Local<v8::Object> o = info[i].As<v8::Object>();
  *data = node::Buffer::Data(o);
  *len = node::Buffer::Length(o);
  return true;
}

bool IsInt(double d, double lo, double hi) {
  return std::isfinite(d) && std::floor(d) == d && d >= lo && d <= hi;
}

bool ToFd(double d, int* fd) {
  if (!IsInt(d, 0, INT_MAX)) return false;
  *fd = static_cast<int>(d);
  return true;
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

void Ret(const Info& info, int v) { info.GetReturnValue().Set(Nan::New<v8::Int32>(v)); }

void RetU64(const Info& info, uint64_t v) {
  info.GetReturnValue().Set(v8::BigInt::NewFromUnsigned(info.GetIsolate(), v));
}

void SetProp(v8::Local<v8::Object> o, const char* k, v8::Local<v8::Value> v) {
  Nan::Set(o, Nan::New(k).ToLocalChecked(), v);
}

int NegErrno() { return errno ? -errno : -EINVAL; }

int DupCloexec(int fd) {
  if (fd < 0) return fd;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return d < 0 ? NegErrno() : d;
}

// Checks that fd is open and, when /proc tells us, that it is the wanted kind
// of BPF object ("bpf-map", "bpf-prog"). 0 or a negative errno.
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
  for (char& ch : alt) if (ch == '-') ch = '_';
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

// Bytes the kernel copies to/from user space for one value of this map.
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

// ---------------------------------------------------------------------------
// Objects.

NAN_METHOD(ObjectOpen) {
  std::string path;
  if (!GetString(info, 0, "objectOpen", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  LogClear();
  errno = 0;
  bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
  if (!obj) return Ret(info, NegErrno());
  std::lock_guard<std::mutex> lock(g_obj_mu);
  int h = g_next_handle++;
  if (g_next_handle <= 0) g_next_handle = 1;
  g_objects[h] = obj;
  Ret(info, h);
}

NAN_METHOD(ObjectLoad) {
  double h;
  std::string dir;
  if (!GetNumber(info, 0, "objectLoad", "handle", &h)) return;
  if (!GetString(info, 1, "objectLoad", "mapPinDir", &dir)) return;
  if (!IsInt(h, 1, INT_MAX)) return Ret(info, -EBADF);
  bpf_object* obj = FindObject(static_cast<int>(h));
  if (!obj) return Ret(info, -EBADF);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty() || HasNul(dir)) return Ret(info, -EINVAL);
  LogClear();
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    // .rodata/.data/.bss/.kconfig hold the object's own globals: reusing a
    // stale pinned copy would silently change program behaviour.
    if (bpf_map__is_internal(map)) continue;
    std::string pin = dir + "/" + bpf_map__name(map);
    if (pin.size() >= PATH_MAX) return Ret(info, -ENAMETOOLONG);
    int r = bpf_map__set_pin_path(map, pin.c_str());
    if (r < 0) return Ret(info, r);
  }
  int r = bpf_object__load(obj);
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(ObjectProgramFd) {
  double h;
  std::string name;
  if (!GetNumber(info, 0, "objectProgramFd", "handle", &h)) return;
  if (!GetString(info, 1, "objectProgramFd", "progName", &name)) return;
  if (!IsInt(h, 1, INT_MAX)) return Ret(info, -EBADF);
  bpf_object* obj = FindObject(static_cast<int>(h));
  if (!obj) return Ret(info, -EBADF);
  bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
  if (!prog) return Ret(info, -ENOENT);
  int fd = bpf_program__fd(prog);
  if (fd < 0) return Ret(info, fd);  // not loaded
  Ret(info, DupCloexec(fd));
}

NAN_METHOD(ObjectMapFd) {
  double h;
  std::string name;
  if (!GetNumber(info, 0, "objectMapFd", "handle", &h)) return;
  if (!GetString(info, 1, "objectMapFd", "mapName", &name)) return;
  if (!IsInt(h, 1, INT_MAX)) return Ret(info, -EBADF);
  bpf_object* obj = FindObject(static_cast<int>(h));
  if (!obj) return Ret(info, -EBADF);
  bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
  if (!map) return Ret(info, -ENOENT);
  int fd = bpf_map__fd(map);
  if (fd < 0) return Ret(info, fd);  // not created yet
  Ret(info, DupCloexec(fd));
}

NAN_METHOD(ObjectClose) {
  double h;
  if (!GetNumber(info, 0, "objectClose", "handle", &h)) return;
  if (!IsInt(h, 1, INT_MAX)) return;
  bpf_object* obj = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_obj_mu);
    auto it = g_objects.find(static_cast<int>(h));
    if (it == g_objects.end()) return;
    obj = it->second;
    g_objects.erase(it);
  }
  bpf_object__close(obj);
}

NAN_METHOD(LastLog) {
  std::string copy;
  {
    std::lock_guard<std::mutex> lock(g_log_mu);
    copy = g_log;
  }
  info.GetReturnValue().Set(Nan::New(copy).ToLocalChecked());
}

// ---------------------------------------------------------------------------
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

// A program tag as bpftool prints it (16 hex digits).
std::string TagHex(const unsigned char* t) {
  char out[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(out + 2 * i, 3, "%02x", t[i]);
  return out;
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

// ---------------------------------------------------------------------------
// Attachments.

NAN_METHOD(LinkCgroup) {
  double d;
  std::string path, type;
  int prog;
  if (!GetNumber(info, 0, "linkCgroup", "progFd", &d)) return;
  if (!GetString(info, 1, "linkCgroup", "cgroupPath", &path)) return;
  if (!GetString(info, 2, "linkCgroup", "attachType", &type)) return;
  if (!ToFd(d, &prog)) return Ret(info, -EBADF);
  enum bpf_attach_type at;
  if (type == "connect4") at = BPF_CGROUP_INET4_CONNECT;
  else if (type == "connect6") at = BPF_CGROUP_INET6_CONNECT;
  else if (type == "sockops") at = BPF_CGROUP_SOCK_OPS;
  else if (type == "getpeername4") at = BPF_CGROUP_INET4_GETPEERNAME;
  else if (type == "getpeername6") at = BPF_CGROUP_INET6_GETPEERNAME;
  else return Ret(info, -EINVAL);
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
  info.GetReturnValue().Set(o);
}

void SkMsg(const Info& info, const char* fn, bool attach) {
  double p, m;
  int prog, map;
  if (!GetNumber(info, 0, fn, "progFd", &p)) return;
  if (!GetNumber(info, 1, fn, "mapFd", &m)) return;
  if (!ToFd(p, &prog) || !ToFd(m, &map)) return Ret(info, -EBADF);
  int r = attach ? bpf_prog_attach(prog, map, BPF_SK_MSG_VERDICT, 0)
                 : bpf_prog_detach2(prog, map, BPF_SK_MSG_VERDICT);
  Ret(info, r < 0 ? r : 0);
}

NAN_METHOD(AttachSkMsg) { SkMsg(info, "attachSkMsg", true); }
NAN_METHOD(DetachSkMsg) { SkMsg(info, "detachSkMsg", false); }

// ---------------------------------------------------------------------------
// Feature probes. Names are libbpf's own (libbpf_bpf_*_type_str).

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
  if (name == "connect4") at = BPF_CGROUP_INET4_CONNECT;
  else if (name == "connect6") at = BPF_CGROUP_INET6_CONNECT;
  else if (name == "getpeername4") at = BPF_CGROUP_INET4_GETPEERNAME;
  else if (name == "getpeername6") at = BPF_CGROUP_INET6_GETPEERNAME;
  else return Ret(info, -EINVAL);
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

// ---------------------------------------------------------------------------
// socketInNetns.

struct SockReq {
  std::string path;
  int family = AF_INET;
  uint32_t mark = 0;
  bool transparent = false;
  bool reuse_addr = false;
  bool reuse_port = false;
  bool do_bind = false;
  union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } addr;
  bool do_listen = false;
  int backlog = 0;
  int snd_buf = 0;  // SO_SNDBUF / SO_RCVBUF when > 0 (a listener's are inherited by accepted sockets)
  int rcv_buf = 0;
  int keep_idle = 0;     // SO_KEEPALIVE + TCP_KEEPIDLE/INTVL (s) / CNT when keep_idle > 0 (inherited too)
  int keep_intvl = 0;
  int keep_cnt = 0;
  int user_timeout = 0;  // TCP_USER_TIMEOUT (ms) when > 0 (inherited too)
  int result = -EINVAL;
};

int SetIntOpt(int s, int level, int opt, int val) {
  return setsockopt(s, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

// Runs on a RunInNetns() thread only.
int SockInNetns(const SockReq& r) {
  int s = socket(r.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int err = 0;
  if (!err && r.mark) {
    uint32_t m = r.mark;
    if (setsockopt(s, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0) err = -errno;
  }
  if (!err && r.transparent) {
    err = r.family == AF_INET6 ? SetIntOpt(s, SOL_IPV6, IPV6_TRANSPARENT, 1)
                               : SetIntOpt(s, SOL_IP, IP_TRANSPARENT, 1);
  }
  if (!err && r.reuse_addr) err = SetIntOpt(s, SOL_SOCKET, SO_REUSEADDR, 1);
  if (!err && r.reuse_port) err = SetIntOpt(s, SOL_SOCKET, SO_REUSEPORT, 1);
  if (!err && r.family == AF_INET6) err = SetIntOpt(s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
  if (!err && r.snd_buf > 0) err = SetIntOpt(s, SOL_SOCKET, SO_SNDBUF, r.snd_buf);
  if (!err && r.rcv_buf > 0) err = SetIntOpt(s, SOL_SOCKET, SO_RCVBUF, r.rcv_buf);
  if (!err && r.keep_idle > 0) {
    err = SetIntOpt(s, SOL_SOCKET, SO_KEEPALIVE, 1);
    if (!err) err = SetIntOpt(s, IPPROTO_TCP, TCP_KEEPIDLE, r.keep_idle);
    if (!err) err = SetIntOpt(s, IPPROTO_TCP, TCP_KEEPINTVL, r.keep_intvl);
    if (!err) err = SetIntOpt(s, IPPROTO_TCP, TCP_KEEPCNT, r.keep_cnt);
  }
  if (!err && r.user_timeout > 0) err = SetIntOpt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, r.user_timeout);
  if (!err && r.do_bind) {
    socklen_t len = r.family == AF_INET6 ? sizeof r.addr.v6 : sizeof r.addr.v4;
    if (bind(s, reinterpret_cast<const struct sockaddr*>(&r.addr), len) < 0) err = -errno;
  }
  if (!err && r.do_listen) {
    if (listen(s, r.backlog) < 0) err = -errno;
  }
  if (err) {
    close(s);
    return err;
  }
  return s;
}

// Reads an optional property; false when an exception is pending.
bool GetProp(v8::Local<v8::Object> o, const char* k, v8::Local<v8::Value>* out) {
  return Nan::Get(o, Nan::New(k).ToLocalChecked()).ToLocal(out);
}

bool Absent(v8::Local<v8::Value> v) { return v->IsUndefined() || v->IsNull(); }

bool OptBool(const Info& info, v8::Local<v8::Object> o, const char* k, bool* out) {
  v8::Local<v8::Value> v;
  if (!GetProp(o, k, &v)) return false;
  if (Absent(v)) return true;
  if (!v->IsBoolean()) {
    std::string arg = std::string("opts.") + k;
    TypeError(info, "socketInNetns", arg.c_str(), "a boolean");
    return false;
  }
  *out = Nan::To<bool>(v).FromJust();
  return true;
}

// Optional number: *present tells whether it was given.
bool OptNumber(const Info& info, v8::Local<v8::Object> o, const char* k, const char* argname, double* out,
               bool* present, const char* fn = "socketInNetns") {
  v8::Local<v8::Value> v;
  *present = false;
  if (!GetProp(o, k, &v)) return false;
  if (Absent(v)) return true;
  if (!v->IsNumber()) {
    TypeError(info, fn, argname, "a number");
    return false;
  }
  *out = Nan::To<double>(v).FromJust();
  *present = true;
  return true;
}

NAN_METHOD(SocketInNetns) {
  SockReq req;
  memset(&req.addr, 0, sizeof req.addr);
  if (!GetString(info, 0, "socketInNetns", "netnsPath", &req.path)) return;
  if (!info[1]->IsObject()) return TypeError(info, "socketInNetns", "opts", "an object");
  v8::Local<v8::Object> o = info[1].As<v8::Object>();

  // First collect everything (so a TypeError always wins over a value error).
  v8::Local<v8::Value> fam;
  if (!GetProp(o, "family", &fam)) return;
  if (!fam->IsNumber()) return TypeError(info, "socketInNetns", "opts.family", "4 or 6");
  double family = Nan::To<double>(fam).FromJust();
  double mark = 0, backlog = 0, port = 0, sndbuf = 0, rcvbuf = 0, kidle = 0, kintvl = 0, kcnt = 0, utmo = 0;
  bool has_mark, has_listen, has_sndbuf, has_rcvbuf, has_kidle, has_kintvl, has_kcnt, has_utmo;
  if (!OptNumber(info, o, "mark", "opts.mark", &mark, &has_mark)) return;
  if (!OptNumber(info, o, "sndBuf", "opts.sndBuf", &sndbuf, &has_sndbuf)) return;
  if (!OptNumber(info, o, "rcvBuf", "opts.rcvBuf", &rcvbuf, &has_rcvbuf)) return;
  if (!OptNumber(info, o, "keepIdleMs", "opts.keepIdleMs", &kidle, &has_kidle)) return;
  if (!OptNumber(info, o, "keepIntervalMs", "opts.keepIntervalMs", &kintvl, &has_kintvl)) return;
  if (!OptNumber(info, o, "keepCount", "opts.keepCount", &kcnt, &has_kcnt)) return;
  if (!OptNumber(info, o, "userTimeoutMs", "opts.userTimeoutMs", &utmo, &has_utmo)) return;
  if (!OptBool(info, o, "transparent", &req.transparent)) return;
  if (!OptBool(info, o, "reuseAddr", &req.reuse_addr)) return;
  if (!OptBool(info, o, "reusePort", &req.reuse_port)) return;
  if (!OptNumber(info, o, "listen", "opts.listen", &backlog, &has_listen)) return;
  v8::Local<v8::Value> bindv;
  if (!GetProp(o, "bind", &bindv)) return;
  std::string ip;
  if (!Absent(bindv)) {
    if (!bindv->IsObject()) return TypeError(info, "socketInNetns", "opts.bind", "an object");
    v8::Local<v8::Object> b = bindv.As<v8::Object>();
    v8::Local<v8::Value> ipv, portv;
    if (!GetProp(b, "ip", &ipv) || !GetProp(b, "port", &portv)) return;
    if (!ipv->IsString()) return TypeError(info, "socketInNetns", "opts.bind.ip", "a string");
    if (!portv->IsNumber()) return TypeError(info, "socketInNetns", "opts.bind.port", "a number");
    Nan::Utf8String s(ipv);
    ip.assign(*s, static_cast<size_t>(s.length()));
    port = Nan::To<double>(portv).FromJust();
    req.do_bind = true;
  }

  // Then the values.
  if (family == 4) req.family = AF_INET;
  else if (family == 6) req.family = AF_INET6;
  else return Ret(info, -EAFNOSUPPORT);
  if (req.path.empty() || HasNul(req.path)) return Ret(info, -EINVAL);
  if (has_mark) {
    if (!IsInt(mark, 0, UINT32_MAX)) return Ret(info, -EINVAL);
    req.mark = static_cast<uint32_t>(mark);
  }
  if (has_sndbuf) {
    if (!IsInt(sndbuf, 1, 1 << 30)) return Ret(info, -EINVAL);
    req.snd_buf = static_cast<int>(sndbuf);
  }
  if (has_rcvbuf) {
    if (!IsInt(rcvbuf, 1, 1 << 30)) return Ret(info, -EINVAL);
    req.rcv_buf = static_cast<int>(rcvbuf);
  }
  if (has_kidle || has_kintvl || has_kcnt) {
    if (!has_kidle || !has_kintvl || !has_kcnt || !IsInt(kidle, 1, 86400000) || !IsInt(kintvl, 1, 86400000) || !IsInt(kcnt, 1, 127))
      return Ret(info, -EINVAL);
    req.keep_idle = static_cast<int>(std::max(1.0, std::ceil(kidle / 1000.0)));
    req.keep_intvl = static_cast<int>(std::max(1.0, std::ceil(kintvl / 1000.0)));
    req.keep_cnt = static_cast<int>(kcnt);
  }
  if (has_utmo) {
    if (!IsInt(utmo, 0, INT_MAX)) return Ret(info, -EINVAL);
    req.user_timeout = static_cast<int>(utmo);
  }
  if (has_listen) {
    if (!IsInt(backlog, 0, INT_MAX)) return Ret(info, -EINVAL);
    req.do_listen = true;
    req.backlog = static_cast<int>(backlog);
  }
  if (req.do_bind) {
    if (!IsInt(port, 0, 65535) || HasNul(ip)) return Ret(info, -EINVAL);
    if (req.family == AF_INET) {
      req.addr.v4.sin_family = AF_INET;
      req.addr.v4.sin_port = htons(static_cast<uint16_t>(port));
      if (inet_pton(AF_INET, ip.c_str(), &req.addr.v4.sin_addr) != 1) return Ret(info, -EINVAL);
    } else {
      req.addr.v6.sin6_family = AF_INET6;
      req.addr.v6.sin6_port = htons(static_cast<uint16_t>(port));
      if (inet_pton(AF_INET6, ip.c_str(), &req.addr.v6.sin6_addr) != 1) return Ret(info, -EINVAL);
    }
  }

  Ret(info, ambient::RunInNetns(req.path, [&req] { return SockInNetns(req); }));
}

// ---------------------------------------------------------------------------
// Identities.

NAN_METHOD(CgroupId) {
  std::string path;
  if (!GetString(info, 0, "cgroupId", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  struct statfs sfs;
  if (statfs(path.c_str(), &sfs) < 0) return Ret(info, NegErrno());
  if (static_cast<unsigned long>(sfs.f_type) != CGROUP2_SUPER_MAGIC) return Ret(info, -EINVAL);
  alignas(struct file_handle) unsigned char storage[sizeof(struct file_handle) + 8];
  struct file_handle* fh = reinterpret_cast<struct file_handle*>(storage);
  fh->handle_bytes = 8;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), fh, &mount_id, 0) < 0) return Ret(info, NegErrno());
  if (fh->handle_bytes != 8) return Ret(info, -EINVAL);
  uint64_t id;
  memcpy(&id, fh->f_handle, sizeof id);
  RetU64(info, id);
}

NAN_METHOD(NetnsInode) {
  std::string path;
  if (!GetString(info, 0, "netnsInode", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  struct stat st;
  if (stat(path.c_str(), &st) < 0) return Ret(info, NegErrno());
  RetU64(info, static_cast<uint64_t>(st.st_ino));
}

// ---------------------------------------------------------------------------
// Socket hand-over between an old and a new agent: a unix stream socket that
// carries file descriptors (SCM_RIGHTS). Thin: no protocol here, only
// connect / sendmsg / recvmsg with fds, and what a received socket is.

constexpr int kMaxFdsPerMsg = 253;  // SCM_MAX_FD

// Waits until fd is readable/writable; 0, -ETIMEDOUT or -errno.
int PollFor(int fd, short events, int timeout_ms) {
  struct pollfd p = {fd, events, 0};
  for (;;) {
    int r = poll(&p, 1, timeout_ms);
    if (r > 0) return 0;
    if (r == 0) return -ETIMEDOUT;
    if (errno != EINTR) return -errno;
  }
}

NAN_METHOD(UnixConnect) {
  std::string path;
  double t;
  if (!GetString(info, 0, "unixConnect", "path", &path)) return;
  if (!GetNumber(info, 1, "unixConnect", "timeoutMs", &t)) return;
  struct sockaddr_un sa;
  if (path.empty() || HasNul(path) || path.size() >= sizeof sa.sun_path || !IsInt(t, 1, 600000)) return Ret(info, -EINVAL);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return Ret(info, NegErrno());
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());
  int r = 0;
  if (connect(s, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) {
    r = -errno;
    if (r == -EINPROGRESS || r == -EAGAIN) {
      r = PollFor(s, POLLOUT, static_cast<int>(t));
      if (r == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0) r = -errno;
        else if (err) r = -err;
      }
    }
  }
  if (r < 0) {
    close(s);
    return Ret(info, r);
  }
  Ret(info, s);
}

// sendFds(fd, data, fds, timeoutMs): writes all of data; fds ride on the first
// sendmsg. Returns bytes written or -errno.
NAN_METHOD(SendFds) {
  double d, t;
  const char* data;
  size_t len;
  int fd;
  if (!GetNumber(info, 0, "sendFds", "fd", &d)) return;
  if (!GetBuffer(info, 1, "sendFds", "data", &data, &len)) return;
  if (!info[2]->IsArray()) return TypeError(info, "sendFds", "fds", "an array of fds");
  if (!GetNumber(info, 3, "sendFds", "timeoutMs", &t)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (len == 0 || !IsInt(t, 1, 600000)) return Ret(info, -EINVAL);
  v8::Local<v8::Array> arr = info[2].As<v8::Array>();
  if (arr->Length() > kMaxFdsPerMsg) return Ret(info, -E2BIG);
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr->Length(); i++) {
    v8::Local<v8::Value> v = Nan::Get(arr, i).ToLocalChecked();
    int f;
    if (!v->IsNumber() || !ToFd(Nan::To<double>(v).FromJust(), &f)) return Ret(info, -EBADF);
    if (fcntl(f, F_GETFD) < 0) return Ret(info, -EBADF);
    fds.push_back(f);
  }
  size_t sent = 0;
  bool fds_sent = fds.empty();
  while (sent < len) {
    struct iovec iov = {const_cast<char*>(data + sent), len - sent};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> cbuf;
    if (!fds_sent) {
      cbuf.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
      msg.msg_control = cbuf.data();
      msg.msg_controllen = cbuf.size();
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int r = PollFor(fd, POLLOUT, static_cast<int>(t));
        if (r < 0) return Ret(info, r);
        continue;
      }
      return Ret(info, NegErrno());
    }
    fds_sent = true;
    sent += static_cast<size_t>(n);
  }
  Ret(info, static_cast<int>(sent));
}

// recvFds(fd, maxBytes, timeoutMs): one recvmsg of at most maxBytes, waiting
// up to timeoutMs. { data, fds } (data empty at end of stream) or -errno.
// Received fds are CLOEXEC and belong to the caller.
NAN_METHOD(RecvFds) {
  double d, m, t;
  int fd;
  if (!GetNumber(info, 0, "recvFds", "fd", &d)) return;
  if (!GetNumber(info, 1, "recvFds", "maxBytes", &m)) return;
  if (!GetNumber(info, 2, "recvFds", "timeoutMs", &t)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  if (!IsInt(m, 1, 16 * 1024 * 1024) || !IsInt(t, 1, 600000)) return Ret(info, -EINVAL);
  std::vector<char> buf(static_cast<size_t>(m));
  std::vector<char> cbuf(CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg));
  ssize_t n;
  struct msghdr msg;
  for (;;) {
    struct iovec iov = {buf.data(), buf.size()};
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.data();
    msg.msg_controllen = cbuf.size();
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int r = PollFor(fd, POLLIN, static_cast<int>(t));
      if (r < 0) return Ret(info, r);
      continue;
    }
    return Ret(info, NegErrno());
  }
  std::vector<int> fds;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      fds.push_back(f);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {  // fds were lost: refuse the message
    for (int f : fds) close(f);
    return Ret(info, -EMSGSIZE);
  }
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "data", Nan::CopyBuffer(buf.data(), static_cast<uint32_t>(n)).ToLocalChecked());
  v8::Local<v8::Array> a = Nan::New<v8::Array>(static_cast<int>(fds.size()));
  for (size_t i = 0; i < fds.size(); i++) Nan::Set(a, static_cast<uint32_t>(i), Nan::New<v8::Int32>(fds[i]));
  SetProp(out, "fds", a);
  info.GetReturnValue().Set(out);
}

#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif

// socketInfo(fd): what a (received) socket is: { family, type, listening,
// ip, port, netnsInode } or -errno (-ENOTSOCK for other fds).
NAN_METHOD(SocketInfo) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "socketInfo", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return Ret(info, NegErrno());
  len = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0) return Ret(info, NegErrno());
  struct sockaddr_storage ss;
  len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) < 0) return Ret(info, NegErrno());
  char ip[INET6_ADDRSTRLEN] = "";
  int port = 0, family = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<struct sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
    family = 4;
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<struct sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    family = 6;
  }
  uint64_t ino = 0;
  int ns = ioctl(fd, SIOCGSKNS);
  if (ns >= 0) {
    struct stat st;
    if (fstat(ns, &st) == 0) ino = static_cast<uint64_t>(st.st_ino);
    close(ns);
  }
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "family", Nan::New<v8::Int32>(family));
  SetProp(out, "type", Nan::New<v8::Int32>(type));
  SetProp(out, "listening", Nan::New<v8::Boolean>(acc != 0));
  SetProp(out, "ip", Nan::New(ip).ToLocalChecked());
  SetProp(out, "port", Nan::New<v8::Int32>(port));
  SetProp(out, "netnsInode", v8::BigInt::NewFromUnsigned(info.GetIsolate(), ino));
  info.GetReturnValue().Set(out);
}

// unixListen(path, backlog): a listening unix stream socket at path (mode
// 0600), non-blocking and CLOEXEC; any file at path is replaced. Node serves
// it with server.listen({fd}), so libuv never unlinks the path on close (a
// successor may own it by then).
NAN_METHOD(UnixListen) {
  std::string path;
  double b;
  if (!GetString(info, 0, "unixListen", "path", &path)) return;
  if (!GetNumber(info, 1, "unixListen", "backlog", &b)) return;
  struct sockaddr_un sa;
  if (path.empty() || HasNul(path) || path.size() >= sizeof sa.sun_path || !IsInt(b, 1, 65535)) return Ret(info, -EINVAL);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return Ret(info, NegErrno());
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());
  // bind to a temporary name, then rename over path: never a moment without a socket there
  std::string tmp = path + ".new";
  struct sockaddr_un st = sa;
  if (tmp.size() >= sizeof st.sun_path) { close(s); return Ret(info, -ENAMETOOLONG); }
  memset(st.sun_path, 0, sizeof st.sun_path);
  memcpy(st.sun_path, tmp.data(), tmp.size());
  unlink(tmp.c_str());
  int r = 0;
  if (bind(s, reinterpret_cast<struct sockaddr*>(&st), sizeof st) < 0) r = -errno;
  if (!r && chmod(tmp.c_str(), 0600) < 0) r = -errno;
  if (!r && listen(s, static_cast<int>(b)) < 0) r = -errno;
  if (!r && rename(tmp.c_str(), path.c_str()) < 0) r = -errno;
  if (r) {
    unlink(tmp.c_str());
    close(s);
    return Ret(info, r);
  }
  Ret(info, s);
}

// ---------------------------------------------------------------------------
// TCP sockets of a pod's netns (sock_diag), on a thread inside that netns.

// Reads a {family, src, sport, dst, dport, cookie} object; false (TypeError
// thrown) on a wrong type, *ok false on a bad value.
bool GetTcpSock(const Info& info, v8::Local<v8::Value> v, ambient::TcpSock* t, bool* ok) {
  const char* fn = "destroyTcpSockets";
  if (!v->IsObject()) {
    TypeError(info, fn, "socks[i]", "an object");
    return false;
  }
  v8::Local<v8::Object> o = v.As<v8::Object>();
  v8::Local<v8::Value> fam, src, sport, dst, dport, cookie;
  if (!GetProp(o, "family", &fam) || !GetProp(o, "src", &src) || !GetProp(o, "sport", &sport) ||
      !GetProp(o, "dst", &dst) || !GetProp(o, "dport", &dport) || !GetProp(o, "cookie", &cookie))
    return false;
  if (!fam->IsNumber() || !sport->IsNumber() || !dport->IsNumber()) {
    TypeError(info, fn, "socks[i].family/sport/dport", "numbers");
    return false;
  }
  if (!src->IsString() || !dst->IsString()) {
    TypeError(info, fn, "socks[i].src/dst", "strings");
    return false;
  }
  if (!cookie->IsBigInt()) {
    TypeError(info, fn, "socks[i].cookie", "a bigint");
    return false;
  }
  double f = Nan::To<double>(fam).FromJust(), sp = Nan::To<double>(sport).FromJust(), dp = Nan::To<double>(dport).FromJust();
  bool lossless = true;
  t->cookie = cookie.As<v8::BigInt>()->Uint64Value(&lossless);
  Nan::Utf8String s1(src), s2(dst);
  t->src.assign(*s1, static_cast<size_t>(s1.length()));
  t->dst.assign(*s2, static_cast<size_t>(s2.length()));
  t->family = f == 4 ? AF_INET : f == 6 ? AF_INET6 : 0;
  *ok = lossless && t->family != 0 && IsInt(sp, 0, 65535) && IsInt(dp, 0, 65535) && !HasNul(t->src) && !HasNul(t->dst);
  t->sport = static_cast<int>(sp);
  t->dport = static_cast<int>(dp);
  return true;
}

// tcpSockets(netnsPath, states): every TCP socket of the netns whose state
// bit (1 << TCP_*) is in states, as [{family, state, src, sport, dst, dport,
// mark, cookie, uid, inode}], or -errno.
NAN_METHOD(TcpSockets) {
  std::string path;
  double st;
  if (!GetString(info, 0, "tcpSockets", "netnsPath", &path)) return;
  if (!GetNumber(info, 1, "tcpSockets", "states", &st)) return;
  if (path.empty() || HasNul(path) || !IsInt(st, 1, UINT32_MAX)) return Ret(info, -EINVAL);
  uint32_t states = static_cast<uint32_t>(st);
  std::vector<ambient::TcpSock> socks;
  int r = ambient::RunInNetns(path, [&] { return ambient::TcpSockets(states, &socks); });
  if (r < 0) return Ret(info, r);
  v8::Local<v8::Array> a = Nan::New<v8::Array>(static_cast<int>(socks.size()));
  for (size_t i = 0; i < socks.size(); i++) {
    const ambient::TcpSock& t = socks[i];
    v8::Local<v8::Object> o = Nan::New<v8::Object>();
    SetProp(o, "family", Nan::New<v8::Int32>(t.family == AF_INET6 ? 6 : 4));
    SetProp(o, "state", Nan::New<v8::Int32>(t.state));
    SetProp(o, "src", Nan::New(t.src).ToLocalChecked());
    SetProp(o, "sport", Nan::New<v8::Int32>(t.sport));
    SetProp(o, "dst", Nan::New(t.dst).ToLocalChecked());
    SetProp(o, "dport", Nan::New<v8::Int32>(t.dport));
    SetProp(o, "mark", Nan::New<v8::Uint32>(t.mark));
    SetProp(o, "cookie", v8::BigInt::NewFromUnsigned(info.GetIsolate(), t.cookie));
    SetProp(o, "uid", Nan::New<v8::Uint32>(t.uid));
    SetProp(o, "inode", v8::BigInt::NewFromUnsigned(info.GetIsolate(), t.inode));
    Nan::Set(a, static_cast<uint32_t>(i), o);
  }
  info.GetReturnValue().Set(a);
}

// destroyTcpSockets(netnsPath, socks): SOCK_DESTROY for each socket (exact
// family, tuple and cookie). Returns how many were destroyed (gone ones do
// not count), or -errno (-EOPNOTSUPP: the kernel lacks INET_DIAG_DESTROY).
NAN_METHOD(DestroyTcpSockets) {
  std::string path;
  if (!GetString(info, 0, "destroyTcpSockets", "netnsPath", &path)) return;
  if (!info[1]->IsArray()) return TypeError(info, "destroyTcpSockets", "socks", "an array");
  v8::Local<v8::Array> arr = info[1].As<v8::Array>();
  std::vector<ambient::TcpSock> socks;
  bool all_ok = true;
  for (uint32_t i = 0; i < arr->Length(); i++) {
    ambient::TcpSock t;
    bool ok = false;
    if (!GetTcpSock(info, Nan::Get(arr, i).ToLocalChecked(), &t, &ok)) return;
    all_ok = all_ok && ok;
    socks.push_back(t);
  }
  if (path.empty() || HasNul(path) || !all_ok) return Ret(info, -EINVAL);
  int destroyed = 0;
  int r = ambient::RunInNetns(path, [&] {
    for (const auto& t : socks) {
      int e = ambient::DestroyTcpSocket(t);
      if (e == 0) destroyed++;
      else if (e != -ENOENT) return e;
    }
    return 0;
  });
  Ret(info, r < 0 ? r : destroyed);
}

// peerCred(fd): SO_PEERCRED of a connected unix socket: { pid, uid, gid } or -errno.
NAN_METHOD(PeerCred) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "peerCred", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) return Ret(info, NegErrno());
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "pid", Nan::New<v8::Int32>(cr.pid));
  SetProp(out, "uid", Nan::New<v8::Uint32>(cr.uid));
  SetProp(out, "gid", Nan::New<v8::Uint32>(cr.gid));
  info.GetReturnValue().Set(out);
}

// ---------------------------------------------------------------------------
// Liveness and limits of the agent's own sockets and process.

// tcpLiveness(fd): the keepalive and user-timeout options of a TCP socket: {keepalive, keepIdleMs,
// keepIntervalMs, keepCount, userTimeoutMs} or -errno.
NAN_METHOD(TcpLiveness) {
  double d;
  int fd;
  if (!GetNumber(info, 0, "tcpLiveness", "fd", &d)) return;
  if (!ToFd(d, &fd)) return Ret(info, -EBADF);
  int ka = 0, idle = 0, intvl = 0, cnt = 0, user = 0;
  socklen_t l = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &ka, &l) < 0) return Ret(info, NegErrno());
  l = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &l) < 0) return Ret(info, NegErrno());
  l = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &l) < 0) return Ret(info, NegErrno());
  l = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &l) < 0) return Ret(info, NegErrno());
  l = sizeof(int);
  if (getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, &l) < 0) return Ret(info, NegErrno());
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "keepalive", Nan::New<v8::Boolean>(ka != 0));
  SetProp(out, "keepIdleMs", Nan::New<v8::Number>(idle * 1000.0));
  SetProp(out, "keepIntervalMs", Nan::New<v8::Number>(intvl * 1000.0));
  SetProp(out, "keepCount", Nan::New<v8::Int32>(cnt));
  SetProp(out, "userTimeoutMs", Nan::New<v8::Int32>(user));
  info.GetReturnValue().Set(out);
}

// raiseFdLimit(): RLIMIT_NOFILE soft limit raised to the hard limit (raising
// the hard one needs CAP_SYS_RESOURCE; not attempted). {soft, hard} after, or -errno.
NAN_METHOD(RaiseFdLimit) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return Ret(info, NegErrno());
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "soft", Nan::New<v8::Number>(rl.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(rl.rlim_cur)));
  SetProp(out, "hard", Nan::New<v8::Number>(rl.rlim_max == RLIM_INFINITY ? -1.0 : static_cast<double>(rl.rlim_max)));
  info.GetReturnValue().Set(out);
}

// ---------------------------------------------------------------------------

std::once_flag g_init_once;

NAN_MODULE_INIT(Init) {
  std::call_once(g_init_once, [] {
    const char* dbg = getenv("AMBIENTD_LIBBPF_DEBUG");
    g_log_debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    libbpf_set_print(LibbpfPrint);
  });
  Nan::SetMethod(target, "objectOpen", ObjectOpen);
  Nan::SetMethod(target, "objectLoad", ObjectLoad);
  Nan::SetMethod(target, "objectProgramFd", ObjectProgramFd);
  Nan::SetMethod(target, "objectMapFd", ObjectMapFd);
  Nan::SetMethod(target, "objectClose", ObjectClose);
  Nan::SetMethod(target, "lastLog", LastLog);
  Nan::SetMethod(target, "objPin", ObjPin);
  Nan::SetMethod(target, "objGet", ObjGet);
  Nan::SetMethod(target, "closeFd", CloseFd);
  Nan::SetMethod(target, "mapInfo", MapInfo);
  Nan::SetMethod(target, "progInfo", ProgInfo);
  Nan::SetMethod(target, "mapLookup", MapLookup);
  Nan::SetMethod(target, "mapUpdate", MapUpdate);
  Nan::SetMethod(target, "mapDelete", MapDelete);
  Nan::SetMethod(target, "mapNextKey", MapNextKey);
  Nan::SetMethod(target, "linkCgroup", LinkCgroup);
  Nan::SetMethod(target, "linkNetns", LinkNetns);
  Nan::SetMethod(target, "linkDetach", LinkDetach);
  Nan::SetMethod(target, "linkUpdate", LinkUpdate);
  Nan::SetMethod(target, "linkInfo", LinkInfo);
  Nan::SetMethod(target, "attachSkMsg", AttachSkMsg);
  Nan::SetMethod(target, "detachSkMsg", DetachSkMsg);
  Nan::SetMethod(target, "probeProgType", ProbeProgType);
  Nan::SetMethod(target, "probeMapType", ProbeMapType);
  Nan::SetMethod(target, "probeHelper", ProbeHelper);
  Nan::SetMethod(target, "probeAttach", ProbeAttach);
  Nan::SetMethod(target, "socketInNetns", SocketInNetns);
  Nan::SetMethod(target, "cgroupId", CgroupId);
  Nan::SetMethod(target, "netnsInode", NetnsInode);
  Nan::SetMethod(target, "unixConnect", UnixConnect);
  Nan::SetMethod(target, "unixListen", UnixListen);
  Nan::SetMethod(target, "sendFds", SendFds);
  Nan::SetMethod(target, "recvFds", RecvFds);
  Nan::SetMethod(target, "socketInfo", SocketInfo);
  Nan::SetMethod(target, "tcpSockets", TcpSockets);
  Nan::SetMethod(target, "destroyTcpSockets", DestroyTcpSockets);
  Nan::SetMethod(target, "peerCred", PeerCred);
  Nan::SetMethod(target, "tcpLiveness", TcpLiveness);
  Nan::SetMethod(target, "raiseFdLimit", RaiseFdLimit);
}

}  // namespace

NAN_MODULE_WORKER_ENABLED(ambient_native, Init)
