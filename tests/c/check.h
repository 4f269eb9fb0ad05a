/* Minimal test harness shared by the C tests (valid C and C++). */
#ifndef SDA_TEST_CHECK_H
#define SDA_TEST_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        check_count++;                                                                   \
        if (!(cond)) {                                                                   \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, sda_last_error_message());                                    \
        }                                                                                \
    } while (0)

/* The call returns `expected`; on mismatch prints both names and the message. */
#define CHECK_STATUS(call, expected)                                                     \
    do {                                                                                 \
        sda_status got_ = (call);                                                        \
        check_count++;                                                                   \
        if (got_ != (expected)) {                                                        \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (message: %s)\n", __FILE__, \
                    __LINE__, #call, sda_status_str(got_), sda_status_str(expected),     \
                    sda_last_error_message());                                           \
        }                                                                                \
    } while (0)

#define CHECK_MESSAGE_CONTAINS(needle) CHECK(strstr(sda_last_error_message(), (needle)) != NULL)

#if defined(__GNUC__)
__attribute__((unused))
#endif
static int check_report(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures == 0 ? 0 : 1;
}

/* 1 when a library whose path contains `needle` is mapped into this process. */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static int mapped(const char *needle) {
    char line[4096];
    int found = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return -1;
    while (fgets(line, sizeof line, maps)) {
        if (strstr(line, needle)) {
            found = 1;
            break;
        }
    }
    fclose(maps);
    return found;
}
#endif
