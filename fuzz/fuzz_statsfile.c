// Statistics file (kfuse analyze's stats.kfs): the input is loaded with the
// fingerprint its header claims; what loads is saved, must load again, and
// saving that must give the same bytes.
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "fuzz_common.h"
#include "stats/statsfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kf_fuzz_write("stats.kfs", data, size);
    uint64_t fp = 0;
    if (size >= 24) memcpy(&fp, data + 16, 8);
    kf_statsfile f = {0}, g = {0};
    kf_error err = {0};
    if (kf_statsfile_load(&f, path, fp, NULL, &err) == KF_OK) {
        const char *p1 = kf_fuzz_path("saved1.kfs"), *p2 = kf_fuzz_path("saved2.kfs");
        if (kf_statsfile_save(&f, p1, &err) != KF_OK) kf_fuzz_fail("statsfile save", err.msg);
        if (kf_statsfile_load(&g, p1, fp, NULL, &err) != KF_OK)
            kf_fuzz_fail("statistics file written by kfuse does not load back", err.msg);
        if (kf_statsfile_save(&g, p2, &err) != KF_OK) kf_fuzz_fail("statsfile save", err.msg);
        char *b1, *b2;
        size_t n1, n2;
        if (kf_file_read_all(p1, &b1, &n1, &err) != KF_OK || kf_file_read_all(p2, &b2, &n2, &err) != KF_OK)
            kf_fuzz_fail("statsfile read", err.msg);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0) kf_fuzz_fail("statistics file", "saving what was loaded changes it");
        free(b1);
        free(b2);
    } else {
        kf_fuzz_refused(&err);
    }
    kf_statsfile_free(&f);
    kf_statsfile_free(&g);
    kf_fuzz_clean();
    return 0;
}
