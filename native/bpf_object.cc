// SPDX-License-Identifier: Apache-2.0
//
// BPF ELF objects (libbpf's bpf_object) as owned JS objects, and the capture
// of what libbpf prints.
//
// objectOpen(path) returns a BpfObject, a thin nan ObjectWrap that owns one
// bpf_object*: load(mapPinDir), programFd(name), mapFd(name), close(). No
// global table of int ids: the JS object is the handle, so a stale or forged
// number can never name another object, and close() frees exactly the object
// it is called on. close() is idempotent; after it every method returns
// -EBADF. A BpfObject that is garbage collected without close() is freed by
// its destructor (a safety net only: src/datapath/handles.ts closes it
// explicitly and reports owners that did not).

#include <bpf/libbpf.h>
#include <limits.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "bindings.h"

namespace ambient {
namespace {

// ---------------------------------------------------------------------------
// libbpf log capture: the last ~16 KiB of what libbpf printed (warnings,
// verifier logs). Cleared at the start of objectOpen/load so lastLog()
// describes the latest of those calls.

constexpr size_t kLogMax = 16 * 1024;
std::mutex g_log_mu;
std::string g_log;
bool g_log_debug = false;  // AMBIENTD_LIBBPF_DEBUG=1 also keeps debug lines
std::once_flag g_init_once;

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

NAN_METHOD(LastLog) {
  std::string copy;
  {
    std::lock_guard<std::mutex> lock(g_log_mu);
    copy = g_log;
  }
  info.GetReturnValue().Set(Nan::New(copy).ToLocalChecked());
}

// ---------------------------------------------------------------------------
// BpfObject.

class BpfObject : public Nan::ObjectWrap {
 public:
  // The (unexported) constructor of BpfObject instances in this isolate.
  static v8::Local<v8::Function> MakeClass() {
    v8::Local<v8::FunctionTemplate> tpl = Nan::New<v8::FunctionTemplate>(New);
    tpl->SetClassName(Nan::New("BpfObject").ToLocalChecked());
    tpl->InstanceTemplate()->SetInternalFieldCount(1);
    Nan::SetPrototypeMethod(tpl, "load", Load);
    Nan::SetPrototypeMethod(tpl, "programFd", ProgramFd);
    Nan::SetPrototypeMethod(tpl, "mapFd", MapFd);
    Nan::SetPrototypeMethod(tpl, "close", Close);
    return Nan::GetFunction(tpl).ToLocalChecked();
  }

  // objectOpen(path): a BpfObject or -errno. info.Data() is the constructor.
  static NAN_METHOD(Open) {
    std::string path;
    if (!GetString(info, 0, "objectOpen", "path", &path)) return;
    if (BadPath(path)) return Ret(info, -EINVAL);
    LogClear();
    errno = 0;
    bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
    if (!obj) return Ret(info, NegErrno());
    v8::Local<v8::Value> argv[1] = {Nan::New<v8::External>(obj)};
    v8::Local<v8::Object> o;
    if (!Nan::NewInstance(info.Data().As<v8::Function>(), 1, argv).ToLocal(&o)) {
      bpf_object__close(obj);  // exception pending
      return;
    }
    info.GetReturnValue().Set(o);
  }

 private:
  explicit BpfObject(bpf_object* obj) : obj_(obj) {}
  ~BpfObject() override { Free(); }

  void Free() {
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
  }

  // Only objectOpen passes the External; `new` from JS gives a closed object.
  static NAN_METHOD(New) {
    if (!info.IsConstructCall()) return Nan::ThrowTypeError("BpfObject: use objectOpen()");
    bpf_object* obj = info[0]->IsExternal() ? static_cast<bpf_object*>(info[0].As<v8::External>()->Value()) : nullptr;
    (new BpfObject(obj))->Wrap(info.This());
    info.GetReturnValue().Set(info.This());
  }

  // The receiver's bpf_object, or nullptr once closed.
  static bpf_object* Obj(const Info& info) { return Nan::ObjectWrap::Unwrap<BpfObject>(info.Holder())->obj_; }

  // load(mapPinDir, skip?): loads every program but those named in `skip`
  // (an array of program names, each of which must exist) and creates (or
  // adopts) every map, each pinned at mapPinDir/<name>. 0 or -errno.
  static NAN_METHOD(Load) {
    std::string dir;
    if (!GetString(info, 0, "BpfObject.load", "mapPinDir", &dir)) return;
    bpf_object* obj = Obj(info);
    if (!obj) return Ret(info, -EBADF);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (BadPath(dir)) return Ret(info, -EINVAL);
    if (info.Length() > 1 && !Absent(info[1])) {
      if (!info[1]->IsArray()) return TypeError(info, "BpfObject.load", "skip", "an array of program names");
      v8::Local<v8::Array> skip = info[1].As<v8::Array>();
      if (skip->Length() > 64) return Ret(info, -E2BIG);
      for (uint32_t i = 0; i < skip->Length(); i++) {
        v8::Local<v8::Value> v;
        if (!Nan::Get(skip, i).ToLocal(&v) || !v->IsString())
          return TypeError(info, "BpfObject.load", "skip", "an array of program names");
        Nan::Utf8String name(v);
        std::string n(*name, name.length());
        if (BadPath(n)) return Ret(info, -EINVAL);
        bpf_program* prog = bpf_object__find_program_by_name(obj, n.c_str());
        if (!prog) return Ret(info, -ENOENT);
        int r = bpf_program__set_autoload(prog, false);
        if (r < 0) return Ret(info, r);
      }
    }
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

  // programFd(name): a dup of a loaded program's fd (the caller closes it).
  static NAN_METHOD(ProgramFd) {
    std::string name;
    if (!GetString(info, 0, "BpfObject.programFd", "progName", &name)) return;
    bpf_object* obj = Obj(info);
    if (!obj) return Ret(info, -EBADF);
    bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
    if (!prog) return Ret(info, -ENOENT);
    int fd = bpf_program__fd(prog);
    if (fd < 0) return Ret(info, fd);  // not loaded
    Ret(info, DupCloexec(fd));
  }

  // mapFd(name): a dup of a map's fd (the caller closes it).
  static NAN_METHOD(MapFd) {
    std::string name;
    if (!GetString(info, 0, "BpfObject.mapFd", "mapName", &name)) return;
    bpf_object* obj = Obj(info);
    if (!obj) return Ret(info, -EBADF);
    bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map) return Ret(info, -ENOENT);
    int fd = bpf_map__fd(map);
    if (fd < 0) return Ret(info, fd);  // not created yet
    Ret(info, DupCloexec(fd));
  }

  // close(): frees the bpf_object (pins and dup'ed fds stay valid). Idempotent.
  static NAN_METHOD(Close) { Nan::ObjectWrap::Unwrap<BpfObject>(info.Holder())->Free(); }

  bpf_object* obj_;
};

}  // namespace

void RegisterBpfObject(Target target) {
  std::call_once(g_init_once, [] {
    const char* dbg = getenv("AMBIENTD_LIBBPF_DEBUG");
    g_log_debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    libbpf_set_print(LibbpfPrint);
  });
  v8::Local<v8::String> name = Nan::New("objectOpen").ToLocalChecked();
  v8::Local<v8::FunctionTemplate> open = Nan::New<v8::FunctionTemplate>(BpfObject::Open, BpfObject::MakeClass());
  open->SetClassName(name);
  Nan::Set(target, name, Nan::GetFunction(open).ToLocalChecked());
  Nan::SetMethod(target, "lastLog", LastLog);
}

}  // namespace ambient
