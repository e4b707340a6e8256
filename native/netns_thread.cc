// SPDX-License-Identifier: Apache-2.0
#include "netns_thread.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>

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

// ---------------------------------------------------------------------------
// Long-lived threads, one per netns file.

namespace {

struct CachedJob {
  const std::function<int()>* fn;
  int result = -EINVAL;
  bool done = false;
};

struct NsThread {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  std::mutex m;  // guards q, exiting, failed (taken after g_mu when both are)
  std::condition_variable work;
  std::condition_variable finished;
  std::deque<CachedJob*> q;
  bool exiting = false;
  int failed = 0;  // -errno of its open/setns: every job gets it
};

std::mutex g_mu;  // guards g_threads
std::map<std::string, std::shared_ptr<NsThread>>* g_threads = new std::map<std::string, std::shared_ptr<NsThread>>();
int g_count = 0;  // under g_mu

void* NsMain(void* arg) {
  // this reference keeps it alive until the thread is done with it
  std::shared_ptr<NsThread>* holder = static_cast<std::shared_ptr<NsThread>*>(arg);
  std::shared_ptr<NsThread> t = *holder;
  delete holder;
  int err = 0;
  int ns = open(t->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    err = -errno;
  } else {
    struct stat st;
    // the namespace it enters must be the one its callers saw at the path
    if (fstat(ns, &st) < 0)
      err = -errno;
    else if (st.st_dev != t->dev || st.st_ino != t->ino)
      err = -ESTALE;
    else if (setns(ns, CLONE_NEWNET) < 0)
      err = -errno;
    close(ns);
  }
  {
    std::lock_guard<std::mutex> l(t->m);
    t->failed = err;
  }
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(t->m);
      for (;;) {
        while (!t->q.empty()) {
          CachedJob* j = t->q.front();
          t->q.pop_front();
          int r = t->failed;
          if (!r) {
            lk.unlock();
            r = (*j->fn)();
            lk.lock();
          }
          j->result = r;
          j->done = true;
          t->finished.notify_all();
        }
        // a thread that could not enter its netns serves no one: it leaves at once
        if (t->failed) break;
        if (!t->work.wait_for(lk, std::chrono::milliseconds(kNetnsThreadIdleMs), [&] { return !t->q.empty(); })) break;
      }
    }
    // idle (or failed): leave the map, unless work came meanwhile (lock order: g_mu, then t->m)
    std::lock_guard<std::mutex> g(g_mu);
    std::lock_guard<std::mutex> l(t->m);
    if (!t->q.empty()) continue;
    t->exiting = true;
    auto it = g_threads->find(t->path);
    if (it != g_threads->end() && it->second == t) g_threads->erase(it);
    g_count--;
    return nullptr;
  }
}

}  // namespace

int RunInNetnsCached(const std::string& path, const std::function<int()>& fn) {
  struct stat st;
  if (path.empty()) return -EINVAL;
  if (stat(path.c_str(), &st) < 0) return -errno;
  CachedJob job{&fn};
  std::shared_ptr<NsThread> t;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = g_threads->find(path);
    if (it != g_threads->end()) {
      std::lock_guard<std::mutex> l(it->second->m);
      // the same namespace, a thread that still serves: queue it there
      if (!it->second->exiting && !it->second->failed && it->second->dev == st.st_dev && it->second->ino == st.st_ino) {
        t = it->second;
        t->q.push_back(&job);
        t->work.notify_one();
      }
    }
    if (!t) {
      t = std::make_shared<NsThread>();
      t->path = path;
      t->dev = st.st_dev;
      t->ino = st.st_ino;
      t->q.push_back(&job);
      pthread_attr_t attr;
      if (pthread_attr_init(&attr) != 0) return -ENOMEM;
      pthread_attr_setstacksize(&attr, 256 * 1024);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      pthread_t tid;
      auto* holder = new std::shared_ptr<NsThread>(t);
      int e = pthread_create(&tid, &attr, NsMain, holder);
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      pthread_attr_destroy(&attr);
      if (e != 0) {
        delete holder;
        return -e;
      }
      // a thread of the old namespace (path re-pointed) finishes its queue and leaves by itself
      (*g_threads)[path] = t;
      g_count++;
    }
  }
  std::unique_lock<std::mutex> lk(t->m);
  t->finished.wait(lk, [&] { return job.done; });
  return job.result;
}

int NetnsThreadCount() {
  std::lock_guard<std::mutex> g(g_mu);
  return g_count;
}

}  // namespace ambient
