// Status codes and error messages. Library functions return a kf_status and,
// on failure, fill a kf_error with one line naming the file and the problem.
// Only the CLI prints and exits.
#ifndef KF_CORE_STATUS_H
#define KF_CORE_STATUS_H

#include <stddef.h>

typedef enum {
    KF_OK = 0,
    KF_ERR_IO,          // cannot open / read / write / map a file
    KF_ERR_FORMAT,      // file contents malformed (bad header, offsets, shapes)
    KF_ERR_UNSUPPORTED, // well-formed but not handled (architecture, dtype)
    KF_ERR_ARG,         // bad argument or option from the caller
    KF_ERR_NOMEM,       // allocation failed
    KF_ERR_INTERNAL,    // a bug: an invariant did not hold
} kf_status;

typedef struct {
    kf_status code;
    char msg[512];
} kf_error;

// Sets err (may be NULL) and returns code, so callers write
//   return kf_error_set(err, KF_ERR_FORMAT, "%s: bad header", path);
kf_status kf_error_set(kf_error *err, kf_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *kf_status_name(kf_status code);

// Names and strings read from files go into error messages through this:
// copies the n bytes of s (up to its NUL when n is KF_STR_NUL) into buf (cap
// bytes, NUL-terminated) with printable ASCII kept, a backslash doubled and
// every other byte (control characters such as terminal escapes, bytes of
// 0x7F and above) written \xNN; cut with "..." when it does not fit. Returns
// buf, so calls go straight into the argument list:
//   char e[KF_ESC_NAME];
//   kf_error_set(err, KF_ERR_FORMAT, "%s: tensor '%s' ...", path, kf_str_escape(e, sizeof e, name, KF_STR_NUL));
#define KF_STR_NUL ((size_t)-1)
#define KF_ESC_NAME 100 // buffer for one name: up to 96 bytes of it as printed
const char *kf_str_escape(char *buf, size_t cap, const char *s, size_t n);

#endif
