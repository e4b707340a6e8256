// SPDX-License-Identifier: Apache-2.0
//
// returnPath / returnPathState: the in-pod return path that lets the agent
// connect to an app with the *client's* address as source (issue 14), set up
// with raw rtnetlink on a thread inside the pod's netns (netns_thread.h): no
// iptables, no `ip` binary. What it installs, per family, is the equivalent of
//
//   sysctl net.ipv4.tcp_fwmark_accept=1
//   ip [-6] rule add fwmark <mark>/0xffffffff lookup <table> priority <prio>
//   ip [-6] route add local 0.0.0.0/0 (::/0) dev lo table <table> proto static
//
// Why that is enough (and why each piece is needed):
//   - The agent's socket is IP_TRANSPARENT/IPV6_TRANSPARENT, bound to the
//     client's (non-local) address, with SO_MARK=<mark>. Its SYN to the app's
//     pod address is routed through the local table and looped over `lo`,
//     keeping skb->mark.
//   - tcp_fwmark_accept=1 (one sysctl for both families: it lives in
//     net->ipv4 and tcp_v6_conn_request uses it too): inet_request_mark()
//     gives the request socket, and so the accepted child socket, the SYN's
//     mark. Without it the app's SYN-ACK and replies carry mark 0.
//   - The fwmark rule sends those replies (destination: the client's address,
//     not local to the pod) to <table>, whose only route is `local default dev
//     lo`: they are looped back instead of leaving through eth0. The priority
//     is below main (32766) so it wins over the pod's default route; rule 0
//     (local table) still comes first, which is harmless: the client address
//     is not local.
//   - loopback_xmit() keeps the skb's output dst (an RTN_LOCAL route), so on
//     receive ip_rcv_finish_core() / ip6_rcv_finish_core() see skb_valid_dst()
//     and skip the input route lookup (no rp_filter, no "martian" drop of a
//     packet addressed to a non-local address): dst_input() delivers it
//     locally and the TCP socket lookup finds the transparent socket.
//
// enable is idempotent: NLM_F_CREATE|NLM_F_EXCL and EEXIST counts as success
// (fib_nl_newrule's rule_exists() check with NLM_F_EXCL means a second enable
// does not add a duplicate rule). Disable deletes until the kernel says none
// is left (ENOENT/ESRCH/ENODEV, EAFNOSUPPORT for a kernel without IPv6) and
// writes 0 to tcp_fwmark_accept. A failure is returned as -errno: e.g. a pod
// whose IPv6 is disabled makes the IPv6 route fail (EACCES on current
// kernels); the families before it stay set up (disable removes them).
//
// Every netlink socket and the /proc/sys file are opened *after* the setns()
// on the call's own thread, so they belong to the pod's netns.

#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "bindings.h"
#include "netns_thread.h"

namespace ambient {
namespace {

constexpr int kLoopbackIfindex = 1;  // `lo` is ifindex 1 in every netns (net_ns_init: loopback registers first)
constexpr int kMaxDeletes = 64;      // bound on delete-until-gone loops (duplicates added by hand)
constexpr const char* kFwmarkAccept = "/proc/sys/net/ipv4/tcp_fwmark_accept";
// Kernel replies that belong to no socket (a TCP RST to a segment of a
// connection already gone, ICMP errors) carry the mark of the packet they
// answer: an RST to the agent's transparent socket is routed back over lo
// like everything else of that connection, instead of leaving the pod by its
// eth0 towards the client's address. Replies to packets from outside the pod
// (mark 0: veth scrubs marks) are unchanged.
constexpr const char* kFwmarkReflect4 = "/proc/sys/net/ipv4/fwmark_reflect";
constexpr const char* kFwmarkReflect6 = "/proc/sys/net/ipv6/fwmark_reflect";

struct Cfg {
  uint32_t mark = 0;
  uint32_t table = 0;
  uint32_t priority = 0;
  std::vector<int> families;  // AF_INET / AF_INET6
  bool enable = false;
};

struct Rule {
  int family;
  uint32_t priority;
};

struct State {
  int fwmark_accept = -1;
  std::vector<Rule> rules;
  std::vector<int> routes;  // family of each route in the table
};

// ---- netlink plumbing ----

class Nl {
 public:
  int Open() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return -errno;
    struct timeval tv = {5, 0};  // never hang the caller's thread on a lost answer
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof sa);
    sa.nl_family = AF_NETLINK;
    if (bind(fd_, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) return -errno;
    return 0;
  }
  ~Nl() {
    if (fd_ >= 0) close(fd_);
  }

  // Sends one request; returns its sequence number or -errno.
  int Send(struct nlmsghdr* h) {
    h->nlmsg_seq = ++seq_;
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof sa);
    sa.nl_family = AF_NETLINK;
    for (;;) {
      ssize_t n = sendto(fd_, h, h->nlmsg_len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
      if (n >= 0) return 0;
      if (errno != EINTR) return -errno;
    }
  }

  // Reads until the ack (or, for a dump, NLMSG_DONE) of the last request;
  // each data message of that request goes to on_msg. Returns 0 or -errno.
  template <typename F>
  int Wait(F on_msg) {
    for (;;) {
      ssize_t n = recv(fd_, buf_.data(), buf_.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return -errno;
      }
      if (n == 0) return -EPROTO;
      for (struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf_.data()); NLMSG_OK(h, static_cast<unsigned>(n));
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_seq != seq_) continue;  // a stale answer of an earlier (timed-out) request
        if (h->nlmsg_type == NLMSG_DONE) return 0;
        if (h->nlmsg_type == NLMSG_ERROR) {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
          return static_cast<struct nlmsgerr*>(NLMSG_DATA(h))->error;  // 0 = ack
        }
        on_msg(h);
      }
    }
  }

  int Request(struct nlmsghdr* h) {
    int r = Send(h);
    return r < 0 ? r : Wait([](struct nlmsghdr*) {});
  }

 private:
  int fd_ = -1;
  uint32_t seq_ = 0;
  std::vector<char> buf_ = std::vector<char>(64 * 1024);
};

// A request message: header, family header, attributes.
struct Msg {
  alignas(struct nlmsghdr) char buf[256];
  struct nlmsghdr* h = reinterpret_cast<struct nlmsghdr*>(buf);

  template <typename T>
  T* Init(uint16_t type, uint16_t flags) {
    memset(buf, 0, sizeof buf);
    h->nlmsg_len = NLMSG_LENGTH(sizeof(T));
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    return static_cast<T*>(NLMSG_DATA(h));
  }
  void U32(uint16_t type, uint32_t v) {
    auto* a = reinterpret_cast<struct rtattr*>(buf + NLMSG_ALIGN(h->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(sizeof v);
    memcpy(RTA_DATA(a), &v, sizeof v);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
  }
};

// The 8-bit table field: the id itself when it fits, else RT_TABLE_UNSPEC (the
// u32 FRA_TABLE / RTA_TABLE attribute always carries the whole id).
uint8_t TableByte(uint32_t t) { return t < 256 ? static_cast<uint8_t>(t) : static_cast<uint8_t>(RT_TABLE_UNSPEC); }

// RTM_NEWRULE / RTM_DELRULE: fwmark <mark>/0xffffffff lookup <table> priority <prio>.
int RuleMsg(Nl* nl, const Cfg& c, int family, bool add) {
  Msg m;
  auto* f =
      m.Init<struct fib_rule_hdr>(add ? RTM_NEWRULE : RTM_DELRULE, NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0));
  f->family = static_cast<uint8_t>(family);
  f->action = FR_ACT_TO_TBL;
  f->table = TableByte(c.table);
  m.U32(FRA_PRIORITY, c.priority);
  m.U32(FRA_FWMARK, c.mark);
  m.U32(FRA_FWMASK, 0xffffffffu);
  m.U32(FRA_TABLE, c.table);
  return nl->Request(m.h);
}

// RTM_NEWROUTE / RTM_DELROUTE: local default dev lo table <table>.
int RouteMsg(Nl* nl, const Cfg& c, int family, bool add) {
  Msg m;
  auto* r = m.Init<struct rtmsg>(add ? RTM_NEWROUTE : RTM_DELROUTE, NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0));
  r->rtm_family = static_cast<uint8_t>(family);
  r->rtm_dst_len = 0;
  r->rtm_table = TableByte(c.table);
  r->rtm_type = RTN_LOCAL;
  // As iproute2: a delete matches any scope and protocol (it is our table).
  r->rtm_scope = add ? RT_SCOPE_HOST : RT_SCOPE_NOWHERE;
  r->rtm_protocol = add ? RTPROT_STATIC : RTPROT_UNSPEC;
  m.U32(RTA_OIF, kLoopbackIfindex);
  m.U32(RTA_TABLE, c.table);
  return nl->Request(m.h);
}

// The same file through the host's procfs, mounted at /host/proc in the
// DaemonSet (deploy/ambientd.yaml, volume host-proc): a container's own
// /proc/sys is read-only (the runtime's readonlyPaths). A net sysctl file
// answers for the netns of the task that opens it (this thread, inside the
// pod's netns), whichever procfs mount it is opened through.
constexpr const char* kHostProc = "/host/proc";

int WriteSysctl(const char* path, const char* v) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 && (errno == EROFS || errno == EACCES)) {
    std::string host = std::string(kHostProc) + (path + strlen("/proc"));  // /host/proc/sys/...
    int hfd = open(host.c_str(), O_WRONLY | O_CLOEXEC);
    if (hfd >= 0)
      fd = hfd;
    else if (errno != ENOENT)
      return -errno;  // the host's procfs is there but refused: say why
    else
      errno = EROFS;  // no host procfs mounted: the container's read-only /proc/sys
  }
  if (fd < 0) return -errno;
  ssize_t n = write(fd, v, strlen(v));
  int r = n < 0 ? -errno : (static_cast<size_t>(n) == strlen(v) ? 0 : -EIO);
  close(fd);
  return r;
}

int ReadSysctl(const char* path, int* out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  char b[32] = {0};
  ssize_t n = read(fd, b, sizeof b - 1);
  int r = n < 0 ? -errno : 0;
  close(fd);
  if (r == 0) *out = atoi(b);
  return r;
}

bool Gone(int r) { return r == -ENOENT || r == -ESRCH || r == -ENODEV || r == -EAFNOSUPPORT; }

// Deletes with `del` until the kernel has none left.
template <typename F>
int DeleteAll(F del) {
  for (int i = 0; i < kMaxDeletes; i++) {
    int r = del();
    if (Gone(r)) return 0;
    if (r < 0) return r;
  }
  return -ELOOP;
}

// Runs on a RunInNetns() thread only.
int Apply(const Cfg& c) {
  Nl nl;
  int r = nl.Open();
  if (r < 0) return r;
  if (c.enable) {
    r = WriteSysctl(kFwmarkAccept, "1");
    if (r < 0) return r;
    for (int fam : c.families) {
      r = WriteSysctl(fam == AF_INET6 ? kFwmarkReflect6 : kFwmarkReflect4, "1");
      if (r < 0) return r;
    }
    for (int fam : c.families) {
      // The route first: the rule never points at an empty table.
      r = RouteMsg(&nl, c, fam, true);
      bool added_route = r == 0;
      if (r < 0 && r != -EEXIST) return r;
      r = RuleMsg(&nl, c, fam, true);
      if (r < 0 && r != -EEXIST) {
        if (added_route) RouteMsg(&nl, c, fam, false);  // leave this family as it was
        return r;
      }
    }
    return 0;
  }
  for (int fam : c.families) {
    r = DeleteAll([&] { return RuleMsg(&nl, c, fam, false); });
    if (r < 0) return r;
    r = DeleteAll([&] { return RouteMsg(&nl, c, fam, false); });
    if (r < 0) return r;
    r = WriteSysctl(fam == AF_INET6 ? kFwmarkReflect6 : kFwmarkReflect4, "0");
    if (r < 0 && r != -ENOENT) return r;  // no IPv6 in this netns: nothing was set
  }
  return WriteSysctl(kFwmarkAccept, "0");
}

uint32_t AttrU32(struct rtattr* a) {
  uint32_t v = 0;
  if (RTA_PAYLOAD(a) >= sizeof v) memcpy(&v, RTA_DATA(a), sizeof v);
  return v;
}

int DumpRules(Nl* nl, int family, const Cfg& c, State* st) {
  Msg m;
  auto* f = m.Init<struct fib_rule_hdr>(RTM_GETRULE, NLM_F_DUMP);
  f->family = static_cast<uint8_t>(family);
  int r = nl->Send(m.h);
  if (r < 0) return r;
  r = nl->Wait([&](struct nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWRULE || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct fib_rule_hdr))) return;
    auto* fr = static_cast<struct fib_rule_hdr*>(NLMSG_DATA(h));
    if (fr->family != family) return;
    uint32_t table = fr->table, mark = 0, prio = 0;
    bool has_mark = false;
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *fr));
    for (struct rtattr* a = reinterpret_cast<struct rtattr*>(reinterpret_cast<char*>(fr) + NLMSG_ALIGN(sizeof *fr));
         RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      if (a->rta_type == FRA_TABLE) table = AttrU32(a);
      if (a->rta_type == FRA_PRIORITY) prio = AttrU32(a);
      if (a->rta_type == FRA_FWMARK) {
        mark = AttrU32(a);
        has_mark = true;
      }
    }
    if (table == c.table && has_mark && mark == c.mark) st->rules.push_back({family, prio});
  });
  return r == -EAFNOSUPPORT ? 0 : r;  // a kernel without IPv6 has no IPv6 rules
}

int DumpRoutes(Nl* nl, int family, const Cfg& c, State* st) {
  Msg m;
  auto* rt = m.Init<struct rtmsg>(RTM_GETROUTE, NLM_F_DUMP);
  rt->rtm_family = static_cast<uint8_t>(family);
  int r = nl->Send(m.h);
  if (r < 0) return r;
  r = nl->Wait([&](struct nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) return;
    auto* rm = static_cast<struct rtmsg*>(NLMSG_DATA(h));
    if (rm->rtm_family != family) return;  // without IPv6 the kernel may answer with every family
    uint32_t table = rm->rtm_table;
    int alen = static_cast<int>(RTM_PAYLOAD(h));
    for (struct rtattr* a = RTM_RTA(rm); RTA_OK(a, alen); a = RTA_NEXT(a, alen))
      if (a->rta_type == RTA_TABLE) table = AttrU32(a);
    if (table == c.table) st->routes.push_back(family);  // any route of the table: nothing may be left
  });
  return r == -EAFNOSUPPORT ? 0 : r;
}

// Runs on a RunInNetns() thread only.
int Read(const Cfg& c, State* st) {
  int r = ReadSysctl(kFwmarkAccept, &st->fwmark_accept);
  if (r < 0) return r;
  Nl nl;
  r = nl.Open();
  if (r < 0) return r;
  for (int fam : {AF_INET, AF_INET6}) {
    r = DumpRules(&nl, fam, c, st);
    if (r < 0) return r;
    r = DumpRoutes(&nl, fam, c, st);
    if (r < 0) return r;
  }
  return 0;
}

// ---- arguments ----

constexpr const char* kFn = "returnPath";

bool ReqNumber(const Info& info, v8::Local<v8::Object> o, const char* fn, const char* k, const char* arg, double* out) {
  v8::Local<v8::Value> v;
  if (!GetProp(o, k, &v)) return false;
  if (!v->IsNumber()) {
    TypeError(info, fn, arg, "a number");
    return false;
  }
  *out = Nan::To<double>(v).FromJust();
  return true;
}

// The policy-routing table: 1..2^32-1 but not default/main/local (never
// touch the pod's own tables).
bool GoodTable(double t) {
  return IsInt(t, 1, UINT32_MAX) && t != RT_TABLE_DEFAULT && t != RT_TABLE_MAIN && t != RT_TABLE_LOCAL;
}

// returnPath(netnsPath, {mark, table, priority, families, enable}): 0 or -errno.
NAN_METHOD(ReturnPath) {
  std::string path;
  if (!GetString(info, 0, kFn, "netnsPath", &path)) return;
  if (!info[1]->IsObject()) return TypeError(info, kFn, "opts", "an object");
  v8::Local<v8::Object> o = info[1].As<v8::Object>();
  double mark, table, prio;
  if (!ReqNumber(info, o, kFn, "mark", "opts.mark", &mark)) return;
  if (!ReqNumber(info, o, kFn, "table", "opts.table", &table)) return;
  if (!ReqNumber(info, o, kFn, "priority", "opts.priority", &prio)) return;
  v8::Local<v8::Value> famv, env;
  if (!GetProp(o, "families", &famv) || !GetProp(o, "enable", &env)) return;
  if (!famv->IsArray()) return TypeError(info, kFn, "opts.families", "an array of 4 and/or 6");
  if (!env->IsBoolean()) return TypeError(info, kFn, "opts.enable", "a boolean");
  v8::Local<v8::Array> fa = famv.As<v8::Array>();
  std::vector<double> fams;
  for (uint32_t i = 0; i < fa->Length() && i < 8; i++) {
    v8::Local<v8::Value> e;
    if (!Nan::Get(fa, i).ToLocal(&e)) return;
    if (!e->IsNumber()) return TypeError(info, kFn, "opts.families[i]", "4 or 6");
    fams.push_back(Nan::To<double>(e).FromJust());
  }

  Cfg c;
  c.enable = Nan::To<bool>(env).FromJust();
  if (BadPath(path) || !IsInt(mark, 1, UINT32_MAX) || !GoodTable(table) || !IsInt(prio, 1, 32765))
    return Ret(info, -EINVAL);
  if (fa->Length() == 0 || fa->Length() > 2) return Ret(info, -EINVAL);
  for (double f : fams) {
    int af = f == 4 ? AF_INET : f == 6 ? AF_INET6 : -1;
    if (af < 0) return Ret(info, -EINVAL);
    for (int have : c.families)
      if (have == af) return Ret(info, -EINVAL);  // a duplicate
    c.families.push_back(af);
  }
  c.mark = static_cast<uint32_t>(mark);
  c.table = static_cast<uint32_t>(table);
  c.priority = static_cast<uint32_t>(prio);
  Ret(info, RunInNetns(path, [&c] { return Apply(c); }));
}

// returnPathState(netnsPath, {table, mark}): {fwmarkAccept, rules, routes} or -errno.
NAN_METHOD(ReturnPathState) {
  const char* fn = "returnPathState";
  std::string path;
  if (!GetString(info, 0, fn, "netnsPath", &path)) return;
  if (!info[1]->IsObject()) return TypeError(info, fn, "opts", "an object");
  v8::Local<v8::Object> o = info[1].As<v8::Object>();
  double mark, table;
  if (!ReqNumber(info, o, fn, "table", "opts.table", &table)) return;
  if (!ReqNumber(info, o, fn, "mark", "opts.mark", &mark)) return;
  if (BadPath(path) || !IsInt(mark, 1, UINT32_MAX) || !GoodTable(table)) return Ret(info, -EINVAL);
  Cfg c;
  c.mark = static_cast<uint32_t>(mark);
  c.table = static_cast<uint32_t>(table);
  State st;
  int r = RunInNetns(path, [&] { return Read(c, &st); });
  if (r < 0) return Ret(info, r);
  v8::Local<v8::Object> out = Nan::New<v8::Object>();
  SetProp(out, "fwmarkAccept", Nan::New<v8::Int32>(st.fwmark_accept));
  v8::Local<v8::Array> rules = Nan::New<v8::Array>(static_cast<int>(st.rules.size()));
  for (size_t i = 0; i < st.rules.size(); i++) {
    v8::Local<v8::Object> e = Nan::New<v8::Object>();
    SetProp(e, "family", Nan::New<v8::Int32>(st.rules[i].family == AF_INET6 ? 6 : 4));
    SetProp(e, "priority", Nan::New<v8::Uint32>(st.rules[i].priority));
    Nan::Set(rules, static_cast<uint32_t>(i), e);
  }
  v8::Local<v8::Array> routes = Nan::New<v8::Array>(static_cast<int>(st.routes.size()));
  for (size_t i = 0; i < st.routes.size(); i++) {
    v8::Local<v8::Object> e = Nan::New<v8::Object>();
    SetProp(e, "family", Nan::New<v8::Int32>(st.routes[i] == AF_INET6 ? 6 : 4));
    Nan::Set(routes, static_cast<uint32_t>(i), e);
  }
  SetProp(out, "rules", rules);
  SetProp(out, "routes", routes);
  info.GetReturnValue().Set(out);
}

}  // namespace

void RegisterReturnPath(Target target) {
  Nan::SetMethod(target, "returnPath", ReturnPath);
  Nan::SetMethod(target, "returnPathState", ReturnPathState);
}

}  // namespace ambient
