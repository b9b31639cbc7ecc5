#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

kf_status kf_mmap_open(kf_mmap *m, const char *path, kf_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return kf_error_set(err, KF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kf_error_set(err, KF_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return kf_error_set(err, KF_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return KF_OK;
}

void kf_mmap_close(kf_mmap *m) {
    if (m->data) munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

kf_status kf_file_read_all(const char *path, char **buf, size_t *len, kf_error *err) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) {
        fclose(f);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                fclose(f);
                return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
            }
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return kf_error_set(err, KF_ERR_IO, "%s: read error", path);
    }
    b[n] = 0;
    *buf = b;
    if (len) *len = n;
    return KF_OK;
}

bool kf_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool kf_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool kf_path_join(char *out, size_t n, const char *dir, const char *name) {
    int r = snprintf(out, n, "%s/%s", dir, name);
    return r > 0 && (size_t)r < n;
}

kf_status kf_file_begin(const char *path, char *tmp, size_t cap, FILE **f, kf_error *err) {
    *f = NULL;
    if ((size_t)snprintf(tmp, cap, "%s.tmp", path) >= cap) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    *f = fopen(tmp, "wb");
    return *f ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
}

kf_status kf_file_commit(FILE *f, bool ok, const char *tmp, const char *path, kf_error *err) {
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        remove(tmp);
        return kf_error_set(err, KF_ERR_IO, "%s: write failed", tmp);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return kf_error_set(err, KF_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    return KF_OK;
}

int kf_file_temp_fd(void) {
    FILE *f = tmpfile();
    if (!f) return -1;
    int fd = dup(fileno(f));
    fclose(f); // tmpfile's file is already unlinked; the dup keeps it open
    return fd;
}

bool kf_file_pio(int fd, void *buf, size_t n, int64_t off, bool write) {
    char *p = buf;
    while (n > 0) {
        ssize_t k = write ? pwrite(fd, p, n, (off_t)off) : pread(fd, p, n, (off_t)off);
        if (k <= 0) return false;
        p += k, n -= (size_t)k, off += k;
    }
    return true;
}
