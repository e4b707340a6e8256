// SPDX-License-Identifier: Apache-2.0
//
// TCP sockets of the calling thread's network namespace, through
// NETLINK_SOCK_DIAG: list them (both families), and destroy one
// (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY; the peer gets an RST, the owner
// ECONNABORTED). Used at enrollment to reset the connections a pod opened
// before it was captured. Call from a thread inside the wanted netns
// (RunInNetns).
#ifndef AMBIENT_SOCKDIAG_H
#define AMBIENT_SOCKDIAG_H

#include <cstdint>
#include <string>
#include <vector>

namespace ambient {

struct TcpSock {
  int family = 0;  // AF_INET / AF_INET6
  int state = 0;   // TCP_ESTABLISHED, ...
  std::string src;
  int sport = 0;
  std::string dst;
  int dport = 0;
  uint32_t mark = 0;
  uint64_t cookie = 0;
  uint32_t uid = 0;
  uint64_t inode = 0;
};

// Every TCP socket whose state is in `states` (bit 1 << TCP_*). 0 or -errno.
int TcpSockets(uint32_t states, std::vector<TcpSock>* out);

// Destroys the socket with exactly this family, tuple and cookie.
// 0, -ENOENT when it is gone already, -EOPNOTSUPP without INET_DIAG_DESTROY.
int DestroyTcpSocket(const TcpSock& s);

}  // namespace ambient

#endif
