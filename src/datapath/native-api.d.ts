/**
 * The exact surface of the native addon (native/*.cc, one file per concern
 * with native/addon.cc registering them; built by node-gyp into
 * build/Release/ambient_native.node). It is deliberately thin, and keeps
 * this contract in every function:
 *   - it checks its arguments: a wrong JS type throws a TypeError;
 *   - every other failure (a bad value, the kernel, libbpf) is returned as a
 *     negative errno, never thrown; ./errno.ts names it and turns it into a
 *     typed AmbientError (nativeError);
 *   - setns() happens only on threads the addon creates for one call
 *     (native/netns_thread.cc), never on Node's main thread or libuv's pool.
 *
 * Every fd returned belongs to the caller, who must close it (closeFd) or hand
 * it to Node (net.Server.listen({fd}), new net.Socket({fd})); in the datapath
 * an OwnedFd (./handles.ts) holds it until then. A netns path argument may be
 * any path naming a network namespace: /proc/<pid>/ns/net, /run/netns/<name>,
 * or /proc/self/fd/<fd> of an open namespace fd (NetnsHandle.path, ./netns.ts).
 */

/** Result of a call that returns a value or a negative errno. */
export type Errno = number;

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  btfId: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
}

export interface SocketOptions {
  /** 4 = AF_INET, 6 = AF_INET6. */
  family: 4 | 6;
  /** SO_MARK value (needs CAP_NET_ADMIN); 0/undefined = not set. */
  mark?: number;
  /** IP_TRANSPARENT / IPV6_TRANSPARENT. */
  transparent?: boolean;
  /** SO_BINDTOIFINDEX to the loopback device (ifindex 1): its packets to the pod's own address are routed over lo (client-address preservation). */
  viaLoopback?: boolean;
  reuseAddr?: boolean;
  reusePort?: boolean;
  /** Bind to ip:port (port 0 = any). Omit to leave unbound. */
  bind?: { ip: string; port: number };
  /** listen(backlog) after bind. Omit for a socket that will connect(). */
  listen?: number;
  /** SO_SNDBUF / SO_RCVBUF in bytes (the kernel doubles them; autotuning is off for that direction). A listener's are inherited by the sockets it accepts. */
  sndBuf?: number;
  rcvBuf?: number;
  /** SO_KEEPALIVE with TCP_KEEPIDLE/TCP_KEEPINTVL (whole seconds, at least 1) and TCP_KEEPCNT: all three or none. Inherited by accepted sockets. */
  keepIdleMs?: number;
  keepIntervalMs?: number;
  keepCount?: number;
  /** TCP_USER_TIMEOUT in ms. Inherited by accepted sockets. */
  userTimeoutMs?: number;
}

export interface TcpLiveness {
  /** TCP_KEEPIDLE / TCP_KEEPINTVL (whole seconds, at least 1) */
  keepIdleMs: number;
  keepIntervalMs: number;
  /** TCP_KEEPCNT */
  keepCount: number;
  /** TCP_USER_TIMEOUT: unacknowledged data for this long aborts the connection (0: kernel default) */
  userTimeoutMs?: number;
}

/** A loaded-or-not BPF ELF object, owned by whoever called objectOpen. */
export interface BpfObject {
  /**
   * Load all programs and create maps. Every map is pinned at
   * `${mapPinDir}/${mapName}`; an existing compatible pin there is reused
   * (libbpf's bpf_map__set_pin_path semantics), so a restarted agent adopts
   * its maps. mapPinDir must exist on a bpffs. Programs named in `skip` are
   * not loaded (their programFd is then -ENOENT-like); an unknown name is
   * -ENOENT.
   */
  load(mapPinDir: string, skip?: readonly string[]): 0 | Errno;
  /** fd of a loaded program by its function name (dup'ed: caller closes). */
  programFd(progName: string): number | Errno;
  /** fd of a map by name (dup'ed: caller closes). */
  mapFd(mapName: string): number | Errno;
  /** Frees the bpf_object (idempotent). Pins and dup'ed fds stay valid. */
  close(): void;
}

export interface NativeAddon {
  /**
   * Opens a BPF ELF object (bpf_object__open_file). The result owns the
   * libbpf object: close() it (a garbage-collected BpfObject is freed too,
   * but only as a safety net). No global table of ids: a closed object's
   * methods return -EBADF.
   */
  objectOpen(path: string): BpfObject | Errno;
  /** The last libbpf/verifier log lines of objectOpen / BpfObject.load (for errors). */
  lastLog(): string;

  /** bpf_obj_pin / bpf_obj_get. */
  objPin(fd: number, path: string): 0 | Errno;
  objGet(path: string): number | Errno;
  closeFd(fd: number): 0 | Errno;
  /** A new fd (close-on-exec) for the same open file: fcntl(F_DUPFD_CLOEXEC). */
  dupFd(fd: number): number | Errno;

  mapInfo(fd: number): MapInfo | Errno;
  progInfo(fd: number): ProgInfo | Errno;
  /** Returns the value (valueSize bytes) or -ENOENT when the key is absent. */
  mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | Errno;
  /** flags: 0 BPF_ANY, 1 BPF_NOEXIST, 2 BPF_EXIST. */
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number): 0 | Errno;
  mapDelete(fd: number, key: Buffer): 0 | Errno;
  /** Next key after `key` (null = first); -ENOENT after the last one. */
  mapNextKey(fd: number, key: Buffer | null, keySize: number): Buffer | Errno;

  /**
   * bpf_link_create on a cgroup v2 directory. attachType is one of
   * 'connect4' | 'connect6' | 'bind4' | 'bind6' | 'sockops' | 'getpeername4' | 'getpeername6'. Returns the link fd.
   */
  linkCgroup(progFd: number, cgroupPath: string, attachType: string): number | Errno;
  /** bpf_link_create of an sk_lookup program on the netns at netnsPath. */
  linkNetns(progFd: number, netnsPath: string): number | Errno;
  /** bpf_link_detach: detaches even while the link is pinned elsewhere. */
  linkDetach(linkFd: number): 0 | Errno;
  /** bpf_link_update: atomically replaces the link's program (cgroup links 5.7, netns links 5.8). */
  linkUpdate(linkFd: number, progFd: number): 0 | Errno;
  /** The link's id, type, and its program's id and tag ("" if unreadable). */
  /** netnsIno: for a netns link (sk_lookup), the inode of its netns (0 once that netns is gone). */
  linkInfo(linkFd: number): { id: number; type: number; progId: number; progTag: string; netnsIno?: number } | Errno;
  /** bpf_prog_attach(prog, map, BPF_SK_MSG_VERDICT). */
  attachSkMsg(progFd: number, mapFd: number): 0 | Errno;
  detachSkMsg(progFd: number, mapFd: number): 0 | Errno;

  /** libbpf_probe_bpf_prog_type: 1 supported, 0 not, <0 errno. Names as in libbpf ("sk_lookup", "cgroup_sock_addr", ...). */
  probeProgType(name: string): number;
  /** libbpf_probe_bpf_map_type ("sockhash", "lru_hash", ...). */
  probeMapType(name: string): number;
  /** libbpf_probe_bpf_helper(progType, helper id). */
  probeHelper(progType: string, helperId: number): number;
  /** 1 when a cgroup sock_addr program loads with this expected attach type ('connect4' | 'connect6' | 'getpeername4' | 'getpeername6'). */
  probeAttach(attachType: string): number;

  /**
   * Creates a TCP socket inside the network namespace at netnsPath (a
   * /proc/<pid>/ns/net, /run/netns/<name> or /proc/self/fd/<fd> path). The setns() happens on a
   * thread the addon creates for this call, never on Node's main thread or
   * libuv's pool; the socket is created non-blocking and CLOEXEC, options are
   * applied, then optional bind/listen. Returns the fd.
   */
  socketInNetns(netnsPath: string, opts: SocketOptions): number | Errno;
  /**
   * socketInNetns off the event loop, on the netns's long-lived thread (one
   * per netns file, gone after 2 s idle; a re-pointed path gets a new one): 0
   * and later `cb(fd | -errno)` on this thread's event loop, or -errno at once
   * for a bad value (TypeErrors as socketInNetns). A libuv pool thread waits
   * for the netns thread; it never enters the netns itself.
   */
  socketInNetnsAsync(netnsPath: string, opts: SocketOptions, cb: (rc: number) => void): 0 | Errno;
  /** Long-lived netns threads alive now (socketInNetnsAsync's). */
  netnsThreads(): number;
  /** cgroup v2 id of a cgroup directory (name_to_handle_at), as a bigint. */
  cgroupId(path: string): bigint | Errno;
  /** Inode number of a netns file (identity of the namespace). */
  netnsInode(path: string): bigint | Errno;

  // ---- socket hand-over between an old and a new agent (src/lifecycle/handover.ts) ----
  /** Connects a unix stream socket (non-blocking, CLOEXEC) to path, waiting up to timeoutMs. Returns the fd. */
  unixConnect(path: string, timeoutMs: number): number | Errno;
  /** A listening unix stream socket at path (0600; bound as path.new, then renamed over path). Serve it with net.Server.listen({fd}): libuv then never unlinks the path. */
  unixListen(path: string, backlog: number): number | Errno;
  /** Writes all of data to a stream socket; fds (<= 253) ride on the first sendmsg (SCM_RIGHTS). Bytes written or -errno (-ETIMEDOUT). */
  sendFds(fd: number, data: Buffer, fds: number[], timeoutMs: number): number | Errno;
  /** One recvmsg of at most maxBytes, waiting up to timeoutMs; data is empty at end of stream. -EMSGSIZE if fds were truncated. */
  recvFds(fd: number, maxBytes: number, timeoutMs: number): { data: Buffer; fds: number[] } | Errno;
  /** What a socket fd is: family 4/6 (0 other), SOCK_* type, listening, bound address, and its netns inode (SIOCGSKNS; 0n unknown). */
  socketInfo(fd: number): { family: 0 | 4 | 6; type: number; listening: boolean; ip: string; port: number; netnsInode: bigint } | Errno;
  /** The liveness options of a TCP socket, read back (what socketInNetns set, or a listener passed on). */
  tcpLiveness(fd: number): (Required<TcpLiveness> & { keepalive: boolean }) | Errno;
  /** RLIMIT_NOFILE: soft raised to hard (-1 = unlimited); raising hard needs CAP_SYS_RESOURCE and is not attempted. */
  raiseFdLimit(): { soft: number; hard: number } | Errno;
  /** SO_PEERCRED of a connected unix socket: who is on the other end. */
  peerCred(fd: number): { pid: number; uid: number; gid: number } | Errno;

  // ---- TCP sockets of a netns (NETLINK_SOCK_DIAG), on a thread inside it ----
  /**
   * Every TCP socket of the netns at netnsPath (both families) whose state
   * bit (1 << TCP_ESTABLISHED, ...) is in `states`. `mark` is the socket's
   * SO_MARK (reported to CAP_NET_ADMIN only).
   */
  tcpSockets(netnsPath: string, states: number): TcpSocketInfo[] | Errno;
  /**
   * SOCK_DESTROY of each socket (exact family, tuple and cookie): the peer
   * gets an RST, the owner ECONNABORTED. Returns how many were destroyed
   * (those already gone do not count); -EOPNOTSUPP when the kernel lacks
   * CONFIG_INET_DIAG_DESTROY.
   */
  destroyTcpSockets(netnsPath: string, socks: Array<Pick<TcpSocketInfo, 'family' | 'src' | 'sport' | 'dst' | 'dport' | 'cookie'>>): number | Errno;

  // ---- the in-pod return path for client-address preservation (native/return_path.cc) ----
  /**
   * On a thread inside the netns at netnsPath, over rtnetlink: enable writes 1 to
   * net.ipv4.tcp_fwmark_accept, then per family adds `fwmark <mark>/0xffffffff lookup <table>
   * priority <priority>` and `local default dev lo table <table>` (already present = success; a
   * second enable adds no duplicate). A failing family is left as it was and its -errno returned
   * (families before it stay: disable removes them); IPv6 disabled in the netns gives -EACCES, a
   * loopback that is down -ENETDOWN. enable:false deletes both (already gone = success) and writes 0.
   * -EINVAL: mark not 1..0xffffffff, table not 1..0xffffffff or 253/254/255, priority not 1..32765,
   * families empty, duplicated or not 4/6, bad path.
   */
  returnPath(netnsPath: string, opts: ReturnPathOptions): 0 | Errno;
  /** What returnPath left in the netns: tcp_fwmark_accept, the rules with this table and mark, every route of the table. */
  returnPathState(netnsPath: string, opts: { table: number; mark: number }): ReturnPathState | Errno;
}

export interface ReturnPathOptions {
  mark: number;
  table: number;
  priority: number;
  families: Array<4 | 6>;
  enable: boolean;
}

export interface ReturnPathState {
  /** net.ipv4.tcp_fwmark_accept of the netns (it covers both families). */
  fwmarkAccept: number;
  rules: Array<{ family: 4 | 6; priority: number }>;
  routes: Array<{ family: 4 | 6 }>;
}

export interface TcpSocketInfo {
  family: 4 | 6;
  /** TCP_ESTABLISHED = 1, ... TCP_LISTEN = 10 (include/net/tcp_states.h) */
  state: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  mark: number;
  cookie: bigint;
  uid: number;
  inode: bigint;
}
