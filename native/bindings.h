// SPDX-License-Identifier: Apache-2.0
//
// One Register function per binding file: each sets its JS functions on the
// module's exports (addon.cc calls them all from the module initializer).
#ifndef AMBIENT_BINDINGS_H
#define AMBIENT_BINDINGS_H

#include <nan.h>

namespace ambient {

using Target = v8::Local<v8::Object>;

// bpf_object.cc: objectOpen (a BpfObject: load, programFd, mapFd, close), lastLog
void RegisterBpfObject(Target target);
// bpf_fds.cc: objPin, objGet, closeFd, dupFd, mapInfo, progInfo, mapLookup/Update/Delete/NextKey
void RegisterBpfFds(Target target);
// bpf_links.cc: linkCgroup, linkNetns, linkDetach, linkUpdate, linkInfo, attachSkMsg, detachSkMsg
void RegisterBpfLinks(Target target);
// bpf_probes.cc: probeProgType, probeMapType, probeHelper, probeAttach
void RegisterBpfProbes(Target target);
// netns_socket.cc: socketInNetns, socketInNetnsAsync, netnsThreads
void RegisterNetnsSocket(Target target);
// identity.cc: cgroupId, netnsInode
void RegisterIdentity(Target target);
// fd_passing.cc: unixConnect, unixListen, sendFds, recvFds
void RegisterFdPassing(Target target);
// sock_info.cc: socketInfo, peerCred, tcpLiveness, raiseFdLimit
void RegisterSockInfo(Target target);
// sockdiag_binding.cc: tcpSockets, destroyTcpSockets
void RegisterSockDiag(Target target);
// return_path.cc: returnPath, returnPathState
void RegisterReturnPath(Target target);

}  // namespace ambient

#endif
