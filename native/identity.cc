// SPDX-License-Identifier: Apache-2.0
//
// Identities of a pod: the cgroup v2 id of its cgroup directory (the key of
// its datapath state) and the inode of its netns.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <cstring>
#include <string>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#include "args.h"
#include "bindings.h"

namespace ambient {
namespace {

NAN_METHOD(CgroupId) {
  std::string path;
  if (!GetString(info, 0, "cgroupId", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  struct statfs sfs;
  if (statfs(path.c_str(), &sfs) < 0) return Ret(info, NegErrno());
  if (static_cast<unsigned long>(sfs.f_type) != CGROUP2_SUPER_MAGIC) return Ret(info, -EINVAL);
  alignas(struct file_handle) unsigned char storage[sizeof(struct file_handle) + 8];
  struct file_handle* fh = reinterpret_cast<struct file_handle*>(storage);
  fh->handle_bytes = 8;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), fh, &mount_id, 0) < 0) return Ret(info, NegErrno());
  if (fh->handle_bytes != 8) return Ret(info, -EINVAL);
  uint64_t id;
  memcpy(&id, fh->f_handle, sizeof id);
  RetU64(info, id);
}

NAN_METHOD(NetnsInode) {
  std::string path;
  if (!GetString(info, 0, "netnsInode", "path", &path)) return;
  if (path.empty() || HasNul(path)) return Ret(info, -EINVAL);
  struct stat st;
  if (stat(path.c_str(), &st) < 0) return Ret(info, NegErrno());
  RetU64(info, static_cast<uint64_t>(st.st_ino));
}

}  // namespace

void RegisterIdentity(Target target) {
  Nan::SetMethod(target, "cgroupId", CgroupId);
  Nan::SetMethod(target, "netnsInode", NetnsInode);
}

}  // namespace ambient
