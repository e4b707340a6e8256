// SPDX-License-Identifier: Apache-2.0
//
// socketInNetns(netnsPath, opts): a TCP socket made inside another network
// namespace, on a thread of its own (netns_thread.h), with its options, bind
// and listen applied there. The fd belongs to the caller.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif

#include "args.h"
#include "bindings.h"
#include "netns_thread.h"

namespace ambient {
namespace {

struct SockReq {
  std::string path;
  int family = AF_INET;
  uint32_t mark = 0;
  bool transparent = false;
  bool via_loopback = false;  // SO_BINDTOIFINDEX 1: routed over the pod's loopback (see bpf amb_sk_lookup_lo)
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
  int keep_idle = 0;  // SO_KEEPALIVE + TCP_KEEPIDLE/INTVL (s) / CNT when keep_idle > 0 (inherited too)
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
    err = r.family == AF_INET6 ? SetIntOpt(s, SOL_IPV6, IPV6_TRANSPARENT, 1) : SetIntOpt(s, SOL_IP, IP_TRANSPARENT, 1);
  }
  // Bound to the loopback device (LOOPBACK_IFINDEX is 1 in every netns): the
  // route to the pod's own address then comes from a route on lo, so the SYN's
  // inet_iif() -- what sk_lookup sees as ingress_ifindex -- is lo, never the
  // pod's eth0 that every packet from outside the pod arrives on.
  if (!err && r.via_loopback) err = SetIntOpt(s, SOL_SOCKET, SO_BINDTOIFINDEX, 1);
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

// The arguments of socketInNetns(Async): 1 when req is complete, 0 when a
// TypeError was thrown, else the -errno to return.
int ParseSockReq(const Info& info, SockReq& req) {
  memset(&req.addr, 0, sizeof req.addr);
  if (!GetString(info, 0, "socketInNetns", "netnsPath", &req.path)) return 0;
  if (!info[1]->IsObject()) return TypeError(info, "socketInNetns", "opts", "an object"), 0;
  v8::Local<v8::Object> o = info[1].As<v8::Object>();

  // First collect everything (so a TypeError always wins over a value error).
  v8::Local<v8::Value> fam;
  if (!GetProp(o, "family", &fam)) return 0;
  if (!fam->IsNumber()) return TypeError(info, "socketInNetns", "opts.family", "4 or 6"), 0;
  double family = Nan::To<double>(fam).FromJust();
  double mark = 0, backlog = 0, port = 0, sndbuf = 0, rcvbuf = 0, kidle = 0, kintvl = 0, kcnt = 0, utmo = 0;
  bool has_mark, has_listen, has_sndbuf, has_rcvbuf, has_kidle, has_kintvl, has_kcnt, has_utmo;
  if (!OptNumber(info, o, "mark", "opts.mark", &mark, &has_mark)) return 0;
  if (!OptNumber(info, o, "sndBuf", "opts.sndBuf", &sndbuf, &has_sndbuf)) return 0;
  if (!OptNumber(info, o, "rcvBuf", "opts.rcvBuf", &rcvbuf, &has_rcvbuf)) return 0;
  if (!OptNumber(info, o, "keepIdleMs", "opts.keepIdleMs", &kidle, &has_kidle)) return 0;
  if (!OptNumber(info, o, "keepIntervalMs", "opts.keepIntervalMs", &kintvl, &has_kintvl)) return 0;
  if (!OptNumber(info, o, "keepCount", "opts.keepCount", &kcnt, &has_kcnt)) return 0;
  if (!OptNumber(info, o, "userTimeoutMs", "opts.userTimeoutMs", &utmo, &has_utmo)) return 0;
  if (!OptBool(info, o, "transparent", &req.transparent)) return 0;
  if (!OptBool(info, o, "viaLoopback", &req.via_loopback)) return 0;
  if (!OptBool(info, o, "reuseAddr", &req.reuse_addr)) return 0;
  if (!OptBool(info, o, "reusePort", &req.reuse_port)) return 0;
  if (!OptNumber(info, o, "listen", "opts.listen", &backlog, &has_listen)) return 0;
  v8::Local<v8::Value> bindv;
  if (!GetProp(o, "bind", &bindv)) return 0;
  std::string ip;
  if (!Absent(bindv)) {
    if (!bindv->IsObject()) return TypeError(info, "socketInNetns", "opts.bind", "an object"), 0;
    v8::Local<v8::Object> b = bindv.As<v8::Object>();
    v8::Local<v8::Value> ipv, portv;
    if (!GetProp(b, "ip", &ipv) || !GetProp(b, "port", &portv)) return 0;
    if (!ipv->IsString()) return TypeError(info, "socketInNetns", "opts.bind.ip", "a string"), 0;
    if (!portv->IsNumber()) return TypeError(info, "socketInNetns", "opts.bind.port", "a number"), 0;
    Nan::Utf8String s(ipv);
    ip.assign(*s, static_cast<size_t>(s.length()));
    port = Nan::To<double>(portv).FromJust();
    req.do_bind = true;
  }

  // Then the values.
  if (family == 4)
    req.family = AF_INET;
  else if (family == 6)
    req.family = AF_INET6;
  else
    return -EAFNOSUPPORT;
  if (req.path.empty() || HasNul(req.path)) return -EINVAL;
  if (has_mark) {
    if (!IsInt(mark, 0, UINT32_MAX)) return -EINVAL;
    req.mark = static_cast<uint32_t>(mark);
  }
  if (has_sndbuf) {
    if (!IsInt(sndbuf, 1, 1 << 30)) return -EINVAL;
    req.snd_buf = static_cast<int>(sndbuf);
  }
  if (has_rcvbuf) {
    if (!IsInt(rcvbuf, 1, 1 << 30)) return -EINVAL;
    req.rcv_buf = static_cast<int>(rcvbuf);
  }
  if (has_kidle || has_kintvl || has_kcnt) {
    if (!has_kidle || !has_kintvl || !has_kcnt || !IsInt(kidle, 1, 86400000) || !IsInt(kintvl, 1, 86400000) ||
        !IsInt(kcnt, 1, 127))
      return -EINVAL;
    req.keep_idle = static_cast<int>(std::max(1.0, std::ceil(kidle / 1000.0)));
    req.keep_intvl = static_cast<int>(std::max(1.0, std::ceil(kintvl / 1000.0)));
    req.keep_cnt = static_cast<int>(kcnt);
  }
  if (has_utmo) {
    if (!IsInt(utmo, 0, INT_MAX)) return -EINVAL;
    req.user_timeout = static_cast<int>(utmo);
  }
  if (has_listen) {
    if (!IsInt(backlog, 0, INT_MAX)) return -EINVAL;
    req.do_listen = true;
    req.backlog = static_cast<int>(backlog);
  }
  if (req.do_bind) {
    if (!IsInt(port, 0, 65535) || HasNul(ip)) return -EINVAL;
    if (req.family == AF_INET) {
      req.addr.v4.sin_family = AF_INET;
      req.addr.v4.sin_port = htons(static_cast<uint16_t>(port));
      if (inet_pton(AF_INET, ip.c_str(), &req.addr.v4.sin_addr) != 1) return -EINVAL;
    } else {
      req.addr.v6.sin6_family = AF_INET6;
      req.addr.v6.sin6_port = htons(static_cast<uint16_t>(port));
      if (inet_pton(AF_INET6, ip.c_str(), &req.addr.v6.sin6_addr) != 1) return -EINVAL;
    }
  }

  return 1;
}

NAN_METHOD(SocketInNetns) {
  SockReq req;
  int rc = ParseSockReq(info, req);
  if (rc == 0) return;
  if (rc < 0) return Ret(info, rc);
  Ret(info, ambient::RunInNetns(req.path, [&req] { return SockInNetns(req); }));
}

// socketInNetnsAsync: the socket is made on the netns's long-lived thread
// (RunInNetnsCached); a libuv pool thread waits for it (it never enters the
// netns), the callback gets the fd or -errno on the caller's event loop.
class SockWorker : public Nan::AsyncWorker {
 public:
  SockWorker(Nan::Callback* cb, const SockReq& req) : Nan::AsyncWorker(cb, "ambient:socketInNetns"), req_(req) {}
  void Execute() override {
    const SockReq& r = req_;
    result_ = RunInNetnsCached(r.path, [&r] { return SockInNetns(r); });
  }
  void HandleOKCallback() override {
    Nan::HandleScope scope;
    v8::Local<v8::Value> argv[] = {Nan::New<v8::Number>(result_)};
    callback->Call(1, argv, async_resource);
  }

 private:
  SockReq req_;
  int result_ = -EINVAL;
};

NAN_METHOD(SocketInNetnsAsync) {
  SockReq req;
  int rc = ParseSockReq(info, req);
  if (rc == 0) return;
  if (rc < 0) return Ret(info, rc);
  if (!info[2]->IsFunction()) return TypeError(info, "socketInNetnsAsync", "callback", "a function");
  Nan::AsyncQueueWorker(new SockWorker(new Nan::Callback(info[2].As<v8::Function>()), req));
  Ret(info, 0);
}

NAN_METHOD(NetnsThreads) { Ret(info, NetnsThreadCount()); }

}  // namespace

void RegisterNetnsSocket(Target target) {
  Nan::SetMethod(target, "socketInNetns", SocketInNetns);
  Nan::SetMethod(target, "socketInNetnsAsync", SocketInNetnsAsync);
  Nan::SetMethod(target, "netnsThreads", NetnsThreads);
}

}  // namespace ambient
