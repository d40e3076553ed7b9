#ifndef POSTGATE_PRIVATE_FILES_H
#define POSTGATE_PRIVATE_FILES_H

/* The async-signal-safe core of Postgate's private files (inline keys and certificates written
 * for libpq, which only takes paths).
 *
 * A fixed table, allocated statically, holds for each live store the path of its directory and of
 * every file in it. A path is registered before its file is created and published with an atomic
 * store, so that `postgate_pf_scrub_all` -- called from signal handlers and at exit -- can walk the
 * table with nothing but atomic loads and open/fstat/write/fsync/close/unlink/rmdir: no locks, no
 * allocation. Swift code uses this only through `PrivateFiles` and `PrivateFilesRegistry`. */

/* Stores and files per store the table holds, and the longest path (with its NUL). */
#define POSTGATE_PF_MAX_STORES 16
#define POSTGATE_PF_MAX_FILES 8
#define POSTGATE_PF_PATH_MAX 1024

/* Creates a private directory from `template_path` (ending in XXXXXX, as for mkdtemp) with mode
 * 0700 and registers it. Returns the store's slot (>= 0), or -errno: -ENAMETOOLONG for a path that
 * does not fit, -EMFILE when every slot is taken, or mkdtemp's error. */
int postgate_pf_create(const char *template_path);

/* The directory of a live slot (valid until the slot is released). */
const char *postgate_pf_directory(int slot);

/* Registers `path` in a slot before the file is created. 0, or -ENAMETOOLONG / -EMFILE. */
int postgate_pf_add(int slot, const char *path);

/* Overwrites with zeros and removes every file of the slot, removes its directory and frees the
 * slot. Call once per slot, from its owner. */
void postgate_pf_release(int slot);

/* Async-signal-safe: overwrites with zeros and removes the files of every live slot and removes
 * their directories. Slots stay taken (their owners release them). */
void postgate_pf_scrub_all(void);

/* Async-signal-safe: overwrites a regular file with zeros (not following a symbolic link) and
 * unlinks it. */
void postgate_pf_scrub_file(const char *path);

#endif
