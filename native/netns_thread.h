// SPDX-License-Identifier: Apache-2.0
//
// Work inside another network namespace without ever calling setns() on a
// thread that is not ours: RunInNetns() creates a short-lived thread (all
// signals blocked), joins the netns at `path` there, runs `fn` and returns its
// result. Never Node's main thread, never a libuv pool thread.
#ifndef AMBIENT_NETNS_THREAD_H
#define AMBIENT_NETNS_THREAD_H

#include <functional>
#include <string>

namespace ambient {

// fn's result, or -errno when the thread or the setns() failed.
int RunInNetns(const std::string& path, const std::function<int()>& fn);

}  // namespace ambient

#endif
