// SPDX-License-Identifier: Apache-2.0
#include "netns_thread.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace ambient {
namespace {

struct Job {
  const std::string* path;
  const std::function<int()>* fn;
  int result;
};

void* Run(void* arg) {
  Job* j = static_cast<Job*>(arg);
  int ns = open(j->path->c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    j->result = -errno;
    return nullptr;
  }
  if (setns(ns, CLONE_NEWNET) < 0) {
    j->result = -errno;
    close(ns);
    return nullptr;
  }
  close(ns);
  j->result = (*j->fn)();
  return nullptr;  // the thread exits here, taking its netns with it
}

}  // namespace

int RunInNetns(const std::string& path, const std::function<int()>& fn) {
  Job job{&path, &fn, -EINVAL};
  // A fresh thread (not std::thread: without C++ exceptions its failure would
  // abort the process; pthread_create just returns an error). All signals are
  // blocked in it so none of Node's handlers ever runs there.
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return -ENOMEM;
  pthread_attr_setstacksize(&attr, 256 * 1024);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t tid;
  int e = pthread_create(&tid, &attr, Run, &job);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (e != 0) return -e;
  e = pthread_join(tid, nullptr);
  if (e != 0) return -e;
  return job.result;
}

}  // namespace ambient
