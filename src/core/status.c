#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>

kf_status kf_error_set(kf_error *err, kf_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *kf_status_name(kf_status code) {
    switch (code) {
    case KF_OK: return "ok";
    case KF_ERR_IO: return "i/o error";
    case KF_ERR_FORMAT: return "format error";
    case KF_ERR_UNSUPPORTED: return "unsupported";
    case KF_ERR_ARG: return "bad argument";
    case KF_ERR_NOMEM: return "out of memory";
    case KF_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}
