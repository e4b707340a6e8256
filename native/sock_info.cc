// SPDX-License-Identifier: Apache-2.0
//
// What a socket is and who is on its other end (socketInfo, peerCred), the
// liveness options of the agent's own TCP sockets, and its fd limit.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "args.h"
#include "bindings.h"

namespace ambient {
namespace {

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

}  // namespace

void RegisterSockInfo(Target target) {
  Nan::SetMethod(target, "socketInfo", SocketInfo);
  Nan::SetMethod(target, "peerCred", PeerCred);
  Nan::SetMethod(target, "tcpLiveness", TcpLiveness);
  Nan::SetMethod(target, "raiseFdLimit", RaiseFdLimit);
}

}  // namespace ambient
