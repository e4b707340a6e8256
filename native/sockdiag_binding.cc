// SPDX-License-Identifier: Apache-2.0
//
// TCP sockets of a pod's netns (NETLINK_SOCK_DIAG, sockdiag.h), listed or
// destroyed on a thread inside that netns (netns_thread.h).

#include <sys/socket.h>

#include <string>
#include <vector>

#include "args.h"
#include "bindings.h"
#include "netns_thread.h"
#include "sockdiag.h"

namespace ambient {
namespace {

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
  double f = Nan::To<double>(fam).FromJust(), sp = Nan::To<double>(sport).FromJust(),
         dp = Nan::To<double>(dport).FromJust();
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
      if (e == 0)
        destroyed++;
      else if (e != -ENOENT)
        return e;
    }
    return 0;
  });
  Ret(info, r < 0 ? r : destroyed);
}

}  // namespace

void RegisterSockDiag(Target target) {
  Nan::SetMethod(target, "tcpSockets", TcpSockets);
  Nan::SetMethod(target, "destroyTcpSockets", DestroyTcpSockets);
}

}  // namespace ambient
