/*
 * Structs that grow (the header's rule): one program, built against this header, calls the library
 * with each struct as an OLDER program would pass it (a prefix of today's fields, the size ending
 * between two fields) and as a NEWER program would (today's struct plus one trailing uint32_t), and
 * checks that
 *   (a) an older size is accepted, the missing fields taking their defaults (bytes past the size
 *       hold values the library would refuse, so reading them would show),
 *   (b) a larger size is accepted when its unknown tail is zero and refused (naming the struct, the
 *       size given and the size known) when it is not,
 *   (c) the library writes no byte at or past the size it was given (canaries after every struct,
 *       every array entry, every init),
 *   (d) a boolean field other than 0 or 1 is refused, naming the field.
 * tests/c/growth.sh also runs this program, unchanged, against a library built with one more
 * trailing field in every struct (cargo feature sda/abi-growth-test): there today's sizes are the
 * older ones.
 */
#include "sda.h"
#include "check.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define CANARY 0xA5u
#define CANARY32 0xDEADBEEFu

/* Set by tests/c/growth.sh when the library is the grown one (feature sda/abi-growth-test): it knows
 * the extra field of GROWN(type), so a nonzero extra is its field, not an unknown tail, and it
 * writes that field (0) on output. */
static int grown_library = 0;

/* The extra field of an output struct after the call: untouched by today's library, written (0) by
 * the grown one. */
#define EXTRA_UNTOUCHED(x) ((x) == (grown_library ? 0u : CANARY32))
/* The status of an input struct whose extra field is nonzero. */
#define NONZERO_EXTRA_STATUS (grown_library ? SDA_OK : SDA_ERR_INVALID_ARGUMENT)

/* A newer program's struct: today's fields plus one it appended (no struct has tail padding, so
 * the extra field lies exactly at sizeof today's struct, where the library's next version would put
 * it). */
#define GROWN(type) \
    struct {        \
        type base;  \
        uint32_t extra; \
    }

/* Initialises a newer program's struct with its own size. */
#define GROWN_INIT(init, g) init(&(g).base, sizeof(g))

/* Memory for a struct of another size than this program's: malloc's alignment suits every struct. */
static unsigned char *bytes(size_t n) {
    unsigned char *p = (unsigned char *)malloc(n);
    if (!p) abort();
    return p;
}

/* All bytes of [from, to) of `p` equal `value`. */
static int all_bytes(const void *p, size_t from, size_t to, unsigned value) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = from; i < to; i++) {
        if (b[i] != value) return 0;
    }
    return 1;
}

static int work_ok(void *user_data) {
    (void)user_data;
    return SDA_OK;
}

static int probe_work(void *user_data, uint32_t batch) {
    (void)user_data;
    return batch > 4 ? SDA_ERR_OUT_OF_MEMORY : SDA_OK;
}

static int progress_size_ok = 1;
static bool on_progress(void *user_data, const sda_probe_progress *p) {
    (void)user_data;
    /* The library's own size: at least the fields this program knows. */
    if (p->struct_size < offsetof(sda_probe_progress, budget_bytes) + sizeof p->budget_bytes) {
        progress_size_ok = 0;
    }
    return true;
}

/* Every init function: older, exact and larger sizes; never a byte past the size; the bytes past
 * the library's own size zeroed; a size that ends inside a field refused without a write. */
#define CHECK_INIT(type, init, older)                                                   \
    do {                                                                                \
        const size_t total_ = sizeof(type) + 64;                                        \
        unsigned char *buf_ = bytes(total_);                                            \
        type *p_ = (type *)(void *)buf_;                                                \
        memset(buf_, CANARY, total_);                                                   \
        CHECK_STATUS(init(p_, (older)), SDA_OK);                                        \
        CHECK(p_->struct_size == (older));                                              \
        CHECK(all_bytes(buf_, (older), total_, CANARY));                           \
        memset(buf_, CANARY, total_);                                              \
        CHECK_STATUS(init(p_, sizeof(type)), SDA_OK);                                   \
        CHECK(p_->struct_size == sizeof(type));                                         \
        CHECK(all_bytes(buf_, sizeof(type), total_, CANARY));                      \
        memset(buf_, CANARY, total_);                                              \
        CHECK_STATUS(init(p_, sizeof(type) + 8), SDA_OK);                               \
        CHECK(p_->struct_size == sizeof(type) + 8);                                     \
        CHECK(all_bytes(buf_, sizeof(type) + 8, total_, CANARY));                  \
        memset(buf_, CANARY, total_);                                              \
        /* `older` is the offset of a field of 4 bytes or more: one more ends inside it. */      \
        CHECK_STATUS(init(p_, (older) + 1), SDA_ERR_INVALID_ARGUMENT);                  \
        CHECK_MESSAGE_CONTAINS(#type);                                                  \
        CHECK(all_bytes(buf_, 0, total_, CANARY));                                 \
        CHECK_STATUS(init(p_, 3), SDA_ERR_INVALID_ARGUMENT);                            \
        CHECK_STATUS(init(NULL, sizeof(type)), SDA_ERR_NULL_POINTER);                   \
        free(buf_);                                                                     \
    } while (0)

static void test_init_functions(void) {
    /* Through this library's own size, the bytes past the size this program knows are zeroed: */
    const size_t big_size = sizeof(sda_guard_options) + 16;
    unsigned char *big = bytes(big_size);
    memset(big, CANARY, big_size);
    CHECK_STATUS(sda_guard_options_init((sda_guard_options *)(void *)big, big_size), SDA_OK);
    CHECK(all_bytes(big, sizeof(sda_guard_options), big_size, 0));
    free(big);

    CHECK_INIT(sda_guard_options, sda_guard_options_init, offsetof(sda_guard_options, budget_bytes));
    CHECK_INIT(sda_run_report, sda_run_report_init, offsetof(sda_run_report, guidance));
    CHECK_INIT(sda_probe_options, sda_probe_options_init, offsetof(sda_probe_options, save_to));
    CHECK_INIT(sda_probe_result, sda_probe_result_init, offsetof(sda_probe_result, elapsed_ms));
    CHECK_INIT(sda_workload, sda_workload_init, offsetof(sda_workload, with_backward));
    CHECK_INIT(sda_recommendation, sda_recommendation_init, offsetof(sda_recommendation, memory_reason));
    CHECK_INIT(sda_worker_plan, sda_worker_plan_init, offsetof(sda_worker_plan, reason));
    CHECK_INIT(sda_selection, sda_selection_init, offsetof(sda_selection, reason));
    CHECK_INIT(sda_device_details, sda_device_details_init, offsetof(sda_device_details, bf16_supported));
    CHECK_INIT(sda_memory_figures, sda_memory_figures_init, offsetof(sda_memory_figures, process_resident));
    CHECK_INIT(sda_backend_details, sda_backend_details_init, offsetof(sda_backend_details, libtorch_cuda_version));
    CHECK_INIT(sda_problem, sda_problem_init, offsetof(sda_problem, fix));

    /* An older size gets the defaults of the fields it has. */
    {
        sda_guard_options o;
        memset(&o, CANARY, sizeof o);
        CHECK_STATUS(sda_guard_options_init(&o, offsetof(sda_guard_options, keep_effective_batch)), SDA_OK);
        CHECK(o.min_batch == 1 && o.max_attempts == 8 && o.batch_size == 0);
        CHECK(all_bytes(&o, offsetof(sda_guard_options, keep_effective_batch), sizeof o, CANARY));
    }
}

static void test_guard_options(sda_context *ctx) {
    sda_guard_options o;
    GROWN(sda_guard_options) g;
    sda_run_report report;

    /* (a) an older program's options, without keep_effective_batch and what follows; the bytes after
     * its size hold a boolean the library would refuse, had it read them. */
    memset(&o, CANARY, sizeof o);
    CHECK_STATUS(sda_guard_options_init(&o, offsetof(sda_guard_options, keep_effective_batch)), SDA_OK);
    o.batch_size = 4;
    SDA_RUN_REPORT_INIT(&report);
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &o, &report), SDA_OK);
    CHECK(report.attempts == 1);

    /* (b) a newer program's options: zero tail accepted, nonzero refused with the sizes. */
    CHECK_STATUS(GROWN_INIT(sda_guard_options_init, g), SDA_OK);
    CHECK(g.base.struct_size == sizeof g && g.extra == 0);
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &g.base, NULL), SDA_OK);
    g.extra = 1;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &g.base, NULL), NONZERO_EXTRA_STATUS);
    if (!grown_library) {
        CHECK_MESSAGE_CONTAINS("sda_guard_options");
        char given[32], known[32];
        snprintf(given, sizeof given, "%u bytes", (unsigned)sizeof g);
        snprintf(known, sizeof known, "%u bytes", (unsigned)sizeof(sda_guard_options));
        CHECK_MESSAGE_CONTAINS(given);
        CHECK_MESSAGE_CONTAINS(known);
    }

    /* A size that ends inside a field is no older version's. */
    SDA_GUARD_OPTIONS_INIT(&o);
    o.struct_size = offsetof(sda_guard_options, budget_bytes) + 4;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &o, NULL), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("budget_bytes");

    /* (d) booleans. */
    SDA_GUARD_OPTIONS_INIT(&o);
    o.keep_effective_batch = 2;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &o, NULL), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("keep_effective_batch");
    o.keep_effective_batch = 0x100;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &o, NULL), SDA_ERR_INVALID_ARGUMENT);
    o.keep_effective_batch = 1;
    o.batch_size = 2;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, &o, NULL), SDA_OK);
}

static void test_run_report(sda_context *ctx) {
    GROWN(sda_run_report) g;
    unsigned char *old = bytes(sizeof(sda_run_report));
    sda_run_report *r = (sda_run_report *)(void *)old;
    const size_t older = offsetof(sda_run_report, peak_bytes);

    /* (c) a newer program's report: the extra field keeps its canary. */
    GROWN_INIT(sda_run_report_init, g);
    g.extra = CANARY32;
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, NULL, &g.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(g.extra) && g.base.struct_size == sizeof g && g.base.attempts == 1);

    /* An older program's report: written up to its size, not a byte further. */
    memset(old, CANARY, sizeof(sda_run_report));
    CHECK_STATUS(sda_run_report_init(r, older), SDA_OK);
    CHECK_STATUS(sda_guarded_run(ctx, work_ok, NULL, NULL, r), SDA_OK);
    CHECK(r->struct_size == older && r->attempts == 1 && r->status == SDA_OK);
    CHECK(all_bytes(old, older, sizeof(sda_run_report), CANARY));

    /* A failed run writes its report too, within the size. */
    memset(old, CANARY, sizeof(sda_run_report));
    CHECK_STATUS(sda_run_report_init(r, older), SDA_OK);
    CHECK_STATUS(sda_guarded_run(ctx, NULL, NULL, NULL, r), SDA_ERR_NULL_POINTER);
    CHECK(all_bytes(old, older, sizeof(sda_run_report), CANARY));
    free(old);
}

static void test_workload(sda_context *ctx) {
    sda_workload w;
    GROWN(sda_workload) g;

    /* (d) before any torch work: a bad boolean is refused by the reader. */
    SDA_WORKLOAD_INIT(&w);
    w.with_backward = 255;
    CHECK_STATUS(sda_run_workload(ctx, &w, 1), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("with_backward");
    /* (b) nonzero tail refused. */
    GROWN_INIT(sda_workload_init, g);
    g.extra = 7;
    if (!grown_library) { /* the grown library would run the seeds' workload: seconds */
        CHECK_STATUS(sda_run_workload(ctx, &g.base, 1), SDA_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_CONTAINS("sda_workload");
    }

    if (sda_backend_load(ctx) != SDA_OK) {
        printf("no backend: the workload is checked only for what is refused\n");
        return;
    }
    /* (a) an older program's workload without with_backward: ignored garbage after it. */
    memset(&w, CANARY, sizeof w);
    CHECK_STATUS(sda_workload_init(&w, offsetof(sda_workload, with_backward)), SDA_OK);
    w.sample_length = 64;
    w.kernel_size = 4;
    w.padding = 0;
    CHECK_STATUS(sda_run_workload(ctx, &w, 2), SDA_OK);
    /* (b) zero tail accepted. */
    GROWN_INIT(sda_workload_init, g);
    g.base.sample_length = 64;
    g.base.kernel_size = 4;
    CHECK_STATUS(sda_run_workload(ctx, &g.base, 2), SDA_OK);
}

static void test_probe(sda_context *ctx) {
    sda_probe_options o;
    GROWN(sda_probe_options) g;
    GROWN(sda_probe_result) gr;
    unsigned char *old = bytes(sizeof(sda_probe_result));
    sda_probe_result *r = (sda_probe_result *)(void *)old;
    const size_t older_result = offsetof(sda_probe_result, fixed_bytes);

    /* (a) older options, up to and with progress_user_data: save_to past the size is garbage that
     * the library must not read (a bad handle). (c) older result: written up to its size. */
    memset(&o, CANARY, sizeof o);
    CHECK_STATUS(sda_probe_options_init(&o, offsetof(sda_probe_options, save_to)), SDA_OK);
    o.budget_bytes = 64u << 20;
    o.custom_workload = probe_work;
    o.progress = on_progress;
    memset(old, CANARY, sizeof(sda_probe_result));
    CHECK_STATUS(sda_probe_result_init(r, older_result), SDA_OK);
    CHECK_STATUS(sda_probe_batch(ctx, &o, r), SDA_OK);
    CHECK(r->max_batch == 4 && r->struct_size == older_result);
    CHECK(all_bytes(old, older_result, sizeof(sda_probe_result), CANARY));
    free(old);
    CHECK(progress_size_ok);

    /* (b) newer options and result. */
    CHECK_STATUS(GROWN_INIT(sda_probe_options_init, g), SDA_OK);
    g.base.budget_bytes = 64u << 20;
    g.base.custom_workload = probe_work;
    GROWN_INIT(sda_probe_result_init, gr);
    gr.extra = CANARY32;
    CHECK_STATUS(sda_probe_batch(ctx, &g.base, &gr.base), SDA_OK);
    CHECK(gr.base.max_batch == 4 && EXTRA_UNTOUCHED(gr.extra));
    g.extra = 0x10;
    CHECK_STATUS(sda_probe_batch(ctx, &g.base, &gr.base), NONZERO_EXTRA_STATUS);
    if (!grown_library) CHECK_MESSAGE_CONTAINS("sda_probe_options");
}

static void test_outputs(sda_context *ctx) {
    GROWN(sda_selection) sel;
    GROWN(sda_device_details) dev;
    GROWN(sda_device_details) devs[8];
    GROWN(sda_memory_figures) mem;
    GROWN(sda_backend_details) be;
    GROWN(sda_recommendation) rec;
    GROWN(sda_worker_plan) plan;
    GROWN(sda_problem) problems[32];
    const size_t old_size = sizeof(sda_backend_details) + sizeof(sda_device_details) * 8;
    unsigned char *old = bytes(old_size);
    size_t count = 0, i;

    /* (c) newer structs: every extra field keeps its canary. */
    GROWN_INIT(sda_selection_init, sel);
    sel.extra = CANARY32;
    CHECK_STATUS(sda_select_device(ctx, "cpu", &sel.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(sel.extra) && strcmp(sel.base.device, "cpu") == 0 && sel.base.fell_back == 0);

    GROWN_INIT(sda_device_details_init, dev);
    dev.extra = CANARY32;
    CHECK_STATUS(sda_device_info(ctx, &dev.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(dev.extra) && dev.base.device_count >= 1 && dev.base.memory_total > 0);

    GROWN_INIT(sda_memory_figures_init, mem);
    mem.extra = CANARY32;
    CHECK_STATUS(sda_memory_info(ctx, &mem.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(mem.extra) && mem.base.total > 0);

    GROWN_INIT(sda_backend_details_init, be);
    be.extra = CANARY32;
    CHECK_STATUS(sda_backend_info(&be.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(be.extra) && be.base.loaded <= 1);

    GROWN_INIT(sda_recommendation_init, rec);
    rec.extra = CANARY32;
    CHECK_STATUS(sda_recommend(ctx, 0, &rec.base), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(rec.extra) && rec.base.batch_size > 0 && rec.base.memory_reason[0] != 0);

    GROWN_INIT(sda_worker_plan_init, plan);
    plan.extra = CANARY32;
    CHECK_STATUS(sda_plan_workers(ctx, "cpu", 2, 1, &plan.base, NULL, 0, NULL), SDA_OK);
    CHECK(EXTRA_UNTOUCHED(plan.extra) && plan.base.workers == 2 && plan.base.reason[0] != 0);

    /* Arrays: the stride is the first entry's struct_size. */
    GROWN_INIT(sda_device_details_init, devs[0]); /* zeroes devs[0].extra, past its own size */
    for (i = 0; i < 8; i++) devs[i].extra = CANARY32;
    CHECK_STATUS(sda_list_devices(ctx, &devs[0].base, 8, &count), SDA_OK);
    CHECK(count >= 1);
    for (i = 0; i < 8; i++) CHECK(i < count ? EXTRA_UNTOUCHED(devs[i].extra) : devs[i].extra == CANARY32);
    for (i = 0; i < count; i++) CHECK(devs[i].base.struct_size == sizeof devs[0]);
    CHECK(devs[0].base.kind == SDA_DEVICE_KIND_CPU && strcmp(devs[0].base.device, "cpu") == 0);

    GROWN_INIT(sda_problem_init, problems[0]);
    for (i = 0; i < 32; i++) problems[i].extra = CANARY32;
    CHECK_STATUS(sda_validate_environment(ctx, false, &problems[0].base, 32, &count), SDA_OK);
    for (i = 0; i < 32; i++) CHECK(i < count ? EXTRA_UNTOUCHED(problems[i].extra) : problems[i].extra == CANARY32);
    for (i = 0; i < count; i++) CHECK(problems[i].base.struct_size == sizeof problems[0]);

    /* (c) older structs, written up to their size. */
    {
        const size_t older = offsetof(sda_selection, reason);
        sda_selection *s = (sda_selection *)(void *)old;
        memset(old, CANARY, old_size);
        CHECK_STATUS(sda_selection_init(s, older), SDA_OK);
        CHECK_STATUS(sda_select_device(ctx, "cpu", s), SDA_OK);
        CHECK(strcmp(s->device, "cpu") == 0 && all_bytes(old, older, old_size, CANARY));
    }
    {
        const size_t older = offsetof(sda_memory_figures, process_resident);
        sda_memory_figures *m = (sda_memory_figures *)(void *)old;
        memset(old, CANARY, old_size);
        CHECK_STATUS(sda_memory_figures_init(m, older), SDA_OK);
        CHECK_STATUS(sda_memory_info(ctx, m), SDA_OK);
        CHECK(m->total > 0 && all_bytes(old, older, old_size, CANARY));
    }
    {
        const size_t older = offsetof(sda_backend_details, libtorch_cuda_version);
        sda_backend_details *b = (sda_backend_details *)(void *)old;
        memset(old, CANARY, old_size);
        CHECK_STATUS(sda_backend_details_init(b, older), SDA_OK);
        CHECK_STATUS(sda_backend_info(b), SDA_OK);
        CHECK(b->loaded <= 1 && all_bytes(old, older, old_size, CANARY));
    }
    {
        /* The previous version's struct ended at libtorch_cuda_version's end. */
        const size_t older = offsetof(sda_backend_details, libtorch_preloaded);
        sda_backend_details *b = (sda_backend_details *)(void *)old;
        memset(old, CANARY, old_size);
        CHECK_STATUS(sda_backend_details_init(b, older), SDA_OK);
        CHECK_STATUS(sda_backend_info(b), SDA_OK);
        CHECK(b->loaded <= 1 && all_bytes(old, older, old_size, CANARY));
    }
    {
        const size_t older = offsetof(sda_recommendation, memory_fraction);
        sda_recommendation *rr = (sda_recommendation *)malloc(sizeof(sda_recommendation));
        memset(rr, CANARY, sizeof *rr);
        CHECK_STATUS(sda_recommendation_init(rr, older), SDA_OK);
        CHECK_STATUS(sda_recommend(ctx, 0, rr), SDA_OK);
        CHECK(rr->batch_size > 0 && all_bytes(rr, older, sizeof *rr, CANARY));
        free(rr);
    }
    {
        const size_t older = offsetof(sda_worker_plan, reason);
        sda_worker_plan *p = (sda_worker_plan *)malloc(sizeof(sda_worker_plan));
        memset(p, CANARY, sizeof *p);
        CHECK_STATUS(sda_worker_plan_init(p, older), SDA_OK);
        CHECK_STATUS(sda_plan_workers(ctx, "cpu", 2, 1, p, NULL, 0, NULL), SDA_OK);
        CHECK(p->workers == 2 && all_bytes(p, older, sizeof *p, CANARY));
        free(p);
    }
    {
        /* An older array: entries of the older size, packed; nothing past the last one written. */
        const size_t older = offsetof(sda_device_details, bf16_supported);
        sda_device_details *first = (sda_device_details *)(void *)old;
        size_t n = 0;
        memset(old, CANARY, old_size);
        CHECK_STATUS(sda_device_details_init(first, older), SDA_OK);
        CHECK_STATUS(sda_list_devices(ctx, first, 8, &n), SDA_OK);
        CHECK(n >= 1 && strcmp(first->device, "cpu") == 0);
        CHECK(all_bytes(old, n * older, old_size, CANARY));
        for (i = 1; i < n; i++) {
            uint32_t size;
            memcpy(&size, old + i * older, sizeof size);
            CHECK(size == older);
        }
    }
    {
        /* An output struct that ends inside a field, or says nothing: refused, untouched. */
        sda_selection s;
        memset(&s, CANARY, sizeof s);
        s.struct_size = offsetof(sda_selection, device) + 3;
        CHECK_STATUS(sda_select_device(ctx, "cpu", &s), SDA_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_CONTAINS("sda_selection");
        CHECK(all_bytes(&s, sizeof s.struct_size, sizeof s, CANARY));
        s.struct_size = 0;
        CHECK_STATUS(sda_select_device(ctx, "cpu", &s), SDA_ERR_INVALID_ARGUMENT);
    }
    free(old);
}

int main(void) {
    sda_context *ctx = NULL;
    grown_library = getenv("SDA_TEST_GROWN_LIBRARY") != NULL;
    printf("library: %s\n", grown_library ? "grown (one more field in every struct)" : "as built");
    CHECK_STATUS(sda_context_new(NULL, &ctx), SDA_OK);
    test_init_functions();
    test_outputs(ctx);
    test_guard_options(ctx);
    test_run_report(ctx);
    test_probe(ctx);
    test_workload(ctx);
    CHECK_STATUS(sda_context_free(ctx), SDA_OK);
    return check_report("test_growth");
}
