#include "private_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_LIVE = 2 };

struct entry {
    atomic_int ready; /* 1 once `path` is complete */
    char path[POSTGATE_PF_PATH_MAX];
};

struct slot {
    atomic_int state;
    atomic_int reserved; /* entries handed out */
    char directory[POSTGATE_PF_PATH_MAX];
    struct entry files[POSTGATE_PF_MAX_FILES];
};

static struct slot slots[POSTGATE_PF_MAX_STORES];
static const char zeros[4096];

void postgate_pf_scrub_file(const char *path) {
    int fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            off_t left = st.st_size;
            while (left > 0) {
                size_t n = left < (off_t)sizeof zeros ? (size_t)left : sizeof zeros;
                ssize_t w = write(fd, zeros, n);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) break;
                left -= w;
            }
            fsync(fd);
        }
        close(fd);
    }
    unlink(path);
}

int postgate_pf_create(const char *template_path) {
    size_t len = strlen(template_path);
    if (len >= POSTGATE_PF_PATH_MAX) return -ENAMETOOLONG;
    for (int i = 0; i < POSTGATE_PF_MAX_STORES; i++) {
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&slots[i].state, &expected, SLOT_CLAIMED)) continue;
        char buf[POSTGATE_PF_PATH_MAX];
        memcpy(buf, template_path, len + 1);
        if (mkdtemp(buf) == NULL) {
            int e = errno;
            atomic_store(&slots[i].state, SLOT_FREE);
            return -e;
        }
        chmod(buf, 0700);
        memcpy(slots[i].directory, buf, len + 1);
        /* A signal between mkdtemp and this store leaves an empty directory, which the next run's
         * sweep removes. */
        atomic_store_explicit(&slots[i].state, SLOT_LIVE, memory_order_release);
        return i;
    }
    return -EMFILE;
}

const char *postgate_pf_directory(int slot) {
    return slots[slot].directory;
}

int postgate_pf_add(int slot, const char *path) {
    size_t len = strlen(path);
    if (len >= POSTGATE_PF_PATH_MAX) return -ENAMETOOLONG;
    struct slot *s = &slots[slot];
    int k = atomic_fetch_add(&s->reserved, 1);
    if (k >= POSTGATE_PF_MAX_FILES) return -EMFILE;
    memcpy(s->files[k].path, path, len + 1);
    atomic_store_explicit(&s->files[k].ready, 1, memory_order_release);
    return 0;
}

static void scrub_slot(struct slot *s) {
    for (int k = 0; k < POSTGATE_PF_MAX_FILES; k++) {
        if (atomic_load_explicit(&s->files[k].ready, memory_order_acquire)) postgate_pf_scrub_file(s->files[k].path);
    }
    rmdir(s->directory);
}

void postgate_pf_release(int slot) {
    struct slot *s = &slots[slot];
    scrub_slot(s);
    atomic_store_explicit(&s->state, SLOT_CLAIMED, memory_order_release);
    for (int k = 0; k < POSTGATE_PF_MAX_FILES; k++) atomic_store(&s->files[k].ready, 0);
    atomic_store(&s->reserved, 0);
    atomic_store_explicit(&s->state, SLOT_FREE, memory_order_release);
}

void postgate_pf_scrub_all(void) {
    int saved = errno;
    for (int i = 0; i < POSTGATE_PF_MAX_STORES; i++) {
        if (atomic_load_explicit(&slots[i].state, memory_order_acquire) == SLOT_LIVE) scrub_slot(&slots[i]);
    }
    errno = saved;
}
