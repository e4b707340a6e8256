// SPDX-License-Identifier: Apache-2.0
//
// ambient_native: the thin native layer of ambientd. Its JS surface, and the
// contract every function keeps, are written in src/datapath/native-api.d.ts:
//   - a wrong JS *type* of an argument throws a TypeError;
//   - every other failure (bad value, kernel or libbpf error) is returned as a
//     negative errno number, never thrown;
//   - every fd returned is close-on-exec and belongs to the caller.
//
// setns() only ever happens on a short-lived thread created for that one call
// (netns_thread.cc): never on Node's main thread and never on a libuv pool
// thread (whose namespace would then leak into unrelated work).
//
// This file is only the module initializer; the functions live in one file
// per concern (bindings.h lists them).

#include <nan.h>

#include "bindings.h"

namespace {

NAN_MODULE_INIT(Init) {
  ambient::RegisterBpfObject(target);
  ambient::RegisterBpfFds(target);
  ambient::RegisterBpfLinks(target);
  ambient::RegisterBpfProbes(target);
  ambient::RegisterNetnsSocket(target);
  ambient::RegisterIdentity(target);
  ambient::RegisterFdPassing(target);
  ambient::RegisterSockInfo(target);
  ambient::RegisterSockDiag(target);
  ambient::RegisterReturnPath(target);
}

}  // namespace

NAN_MODULE_WORKER_ENABLED(ambient_native, Init)
