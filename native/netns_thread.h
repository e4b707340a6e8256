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

// The same on a long-lived thread of that netns (one per netns file, kept
// while it has work, gone after kNetnsThreadIdleMs idle): no thread creation
// per call. The calling thread waits for the result; it never enters the
// netns. A netns file that now names another namespace (same path, other
// inode) gets a new thread.
int RunInNetnsCached(const std::string& path, const std::function<int()>& fn);

// How long an idle netns thread lives (it holds its netns while it does).
constexpr int kNetnsThreadIdleMs = 2000;

// Netns threads alive now (tests).
int NetnsThreadCount();

}  // namespace ambient

#endif
