// SPDX-License-Identifier: Apache-2.0
#include "sockdiag.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ambient {
namespace {

int Open() {
  int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (s < 0) return -errno;
  struct timeval tv = {5, 0};  // never hang the caller's thread on a lost answer
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return s;
}

int Send(int s, uint16_t type, uint16_t flags, const struct inet_diag_req_v2& req) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = type;
  msg.nlh.nlmsg_flags = flags;
  msg.nlh.nlmsg_seq = 1;
  msg.r = req;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = sendto(s, &msg, sizeof msg, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
    if (n >= 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

bool ToText(int family, const uint32_t* a, std::string* out) {
  char buf[INET6_ADDRSTRLEN];
  if (!inet_ntop(family, a, buf, sizeof buf)) return false;
  *out = buf;
  return true;
}

bool FromText(int family, const std::string& s, uint32_t* a) {
  memset(a, 0, 16);
  return inet_pton(family, s.c_str(), a) == 1;
}

int Dump(int s, int family, uint32_t states, std::vector<TcpSock>* out) {
  struct inet_diag_req_v2 req;
  memset(&req, 0, sizeof req);
  req.sdiag_family = static_cast<uint8_t>(family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = states;
  int r = Send(s, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, req);
  if (r < 0) return r;
  alignas(struct nlmsghdr) char buf[32768];
  for (;;) {
    ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EPROTO;
    for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(h));
        return e->error ? e->error : -EPROTO;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      auto* m = static_cast<struct inet_diag_msg*>(NLMSG_DATA(h));
      TcpSock t;
      t.family = m->idiag_family;
      t.state = m->idiag_state;
      if (!ToText(t.family, m->id.idiag_src, &t.src) || !ToText(t.family, m->id.idiag_dst, &t.dst)) continue;
      t.sport = ntohs(m->id.idiag_sport);
      t.dport = ntohs(m->id.idiag_dport);
      t.cookie = static_cast<uint64_t>(m->id.idiag_cookie[0]) | (static_cast<uint64_t>(m->id.idiag_cookie[1]) << 32);
      t.uid = m->idiag_uid;
      t.inode = m->idiag_inode;
      int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (struct rtattr* a = reinterpret_cast<struct rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
        if (a->rta_type == INET_DIAG_MARK && RTA_PAYLOAD(a) >= sizeof(uint32_t))
          memcpy(&t.mark, RTA_DATA(a), sizeof t.mark);
      }
      out->push_back(t);
    }
  }
}

}  // namespace

int TcpSockets(uint32_t states, std::vector<TcpSock>* out) {
  int s = Open();
  if (s < 0) return s;
  int r = Dump(s, AF_INET, states, out);
  if (r == 0) r = Dump(s, AF_INET6, states, out);
  close(s);
  return r;
}

int DestroyTcpSocket(const TcpSock& t) {
  if (t.family != AF_INET && t.family != AF_INET6) return -EAFNOSUPPORT;
  struct inet_diag_req_v2 req;
  memset(&req, 0, sizeof req);
  req.sdiag_family = static_cast<uint8_t>(t.family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = ~0u;
  if (!FromText(t.family, t.src, req.id.idiag_src) || !FromText(t.family, t.dst, req.id.idiag_dst)) return -EINVAL;
  req.id.idiag_sport = htons(static_cast<uint16_t>(t.sport));
  req.id.idiag_dport = htons(static_cast<uint16_t>(t.dport));
  req.id.idiag_cookie[0] = static_cast<uint32_t>(t.cookie);
  req.id.idiag_cookie[1] = static_cast<uint32_t>(t.cookie >> 32);
  int s = Open();
  if (s < 0) return s;
  int r = Send(s, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, req);
  if (r == 0) {
    alignas(struct nlmsghdr) char buf[1024];
    for (;;) {
      ssize_t n = recv(s, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        r = -errno;
        break;
      }
      auto* h = reinterpret_cast<struct nlmsghdr*>(buf);
      if (!NLMSG_OK(h, static_cast<unsigned>(n)) || h->nlmsg_type != NLMSG_ERROR) {
        r = -EPROTO;
        break;
      }
      r = static_cast<struct nlmsgerr*>(NLMSG_DATA(h))->error;
      break;
    }
  }
  close(s);
  return r;
}

}  // namespace ambient
