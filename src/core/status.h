// Status codes and error messages. Library functions return a kf_status and,
// on failure, fill a kf_error with one line naming the file and the problem.
// Only the CLI prints and exits.
#ifndef KF_CORE_STATUS_H
#define KF_CORE_STATUS_H

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

#endif
