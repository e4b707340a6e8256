// SPDX-License-Identifier: Apache-2.0
//
// Socket hand-over between an old and a new agent: a unix stream socket that
// carries file descriptors (SCM_RIGHTS). Thin: no protocol here, only
// listen / connect / sendmsg / recvmsg with fds.

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "bindings.h"

namespace ambient {
namespace {

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
  if (path.empty() || HasNul(path) || path.size() >= sizeof sa.sun_path || !IsInt(t, 1, 600000))
    return Ret(info, -EINVAL);
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
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
          r = -errno;
        else if (err)
          r = -err;
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
  if (path.empty() || HasNul(path) || path.size() >= sizeof sa.sun_path || !IsInt(b, 1, 65535))
    return Ret(info, -EINVAL);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return Ret(info, NegErrno());
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());
  // bind to a temporary name, then rename over path: never a moment without a socket there
  std::string tmp = path + ".new";
  struct sockaddr_un st = sa;
  if (tmp.size() >= sizeof st.sun_path) {
    close(s);
    return Ret(info, -ENAMETOOLONG);
  }
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

}  // namespace

void RegisterFdPassing(Target target) {
  Nan::SetMethod(target, "unixConnect", UnixConnect);
  Nan::SetMethod(target, "unixListen", UnixListen);
  Nan::SetMethod(target, "sendFds", SendFds);
  Nan::SetMethod(target, "recvFds", RecvFds);
}

}  // namespace ambient
