// SPDX-License-Identifier: Apache-2.0
//
// Argument validation and return helpers shared by every binding file.
//
// The addon's contract (src/datapath/native-api.d.ts):
//   - a wrong JS *type* of an argument throws a TypeError (Get* below: they
//     throw and return false; the caller must then return immediately);
//   - every other failure (bad value, kernel or libbpf error) is returned as a
//     negative errno number (Ret(info, -E...)), never thrown;
//   - every fd returned is close-on-exec and belongs to the caller.
#ifndef AMBIENT_ARGS_H
#define AMBIENT_ARGS_H

#include <fcntl.h>
#include <nan.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

namespace ambient {

using Info = Nan::FunctionCallbackInfo<v8::Value>;

inline void TypeError(const Info& info, const char* fn, const char* arg, const char* want) {
  std::string msg = std::string(fn) + ": " + arg + " must be " + want;
  Nan::ThrowTypeError(msg.c_str());
}

inline bool GetString(const Info& info, int i, const char* fn, const char* arg, std::string* out) {
  if (!info[i]->IsString()) {
    TypeError(info, fn, arg, "a string");
    return false;
  }
  Nan::Utf8String s(info[i]);
  out->assign(*s, static_cast<size_t>(s.length()));
  return true;
}

inline bool GetNumber(const Info& info, int i, const char* fn, const char* arg, double* out) {
  if (!info[i]->IsNumber()) {
    TypeError(info, fn, arg, "a number");
    return false;
  }
  *out = Nan::To<double>(info[i]).FromJust();
  return true;
}

inline bool GetBuffer(const Info& info, int i, const char* fn, const char* arg, const char** data, size_t* len) {
  if (!node::Buffer::HasInstance(info[i])) {
    TypeError(info, fn, arg, "a Buffer");
    return false;
  }
  v8::Local<v8::Object> o = info[i].As<v8::Object>();
  *data = node::Buffer::Data(o);
  *len = node::Buffer::Length(o);
  return true;
}

// Reads a property (absent ones are undefined); false when an exception is pending.
inline bool GetProp(v8::Local<v8::Object> o, const char* k, v8::Local<v8::Value>* out) {
  return Nan::Get(o, Nan::New(k).ToLocalChecked()).ToLocal(out);
}

inline bool Absent(v8::Local<v8::Value> v) { return v->IsUndefined() || v->IsNull(); }

inline bool IsInt(double d, double lo, double hi) {
  return std::isfinite(d) && std::floor(d) == d && d >= lo && d <= hi;
}

inline bool ToFd(double d, int* fd) {
  if (!IsInt(d, 0, INT_MAX)) return false;
  *fd = static_cast<int>(d);
  return true;
}

inline bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

// A path argument the kernel can take: not empty, no NUL inside.
inline bool BadPath(const std::string& s) { return s.empty() || HasNul(s); }

inline void Ret(const Info& info, int v) { info.GetReturnValue().Set(Nan::New<v8::Int32>(v)); }

inline void RetU64(const Info& info, uint64_t v) {
  info.GetReturnValue().Set(v8::BigInt::NewFromUnsigned(info.GetIsolate(), v));
}

inline void SetProp(v8::Local<v8::Object> o, const char* k, v8::Local<v8::Value> v) {
  Nan::Set(o, Nan::New(k).ToLocalChecked(), v);
}

inline int NegErrno() { return errno ? -errno : -EINVAL; }

inline int DupCloexec(int fd) {
  if (fd < 0) return fd;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return d < 0 ? NegErrno() : d;
}

}  // namespace ambient

#endif
