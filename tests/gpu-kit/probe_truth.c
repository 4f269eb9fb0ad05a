/*
 * Check 6 of the GPU truth kit (GPU.md), the built-in workload's side: is `sda probe`'s answer true?
 *
 *   gpu_probe_truth BUDGET_BYTES MAX_BATCH RECOMMENDED_BATCH [DEVICE]
 *
 * (DEVICE, default cuda:0, lets the search itself be tried on cpu while developing the kit; run.sh
 * never passes it.)
 * In a process of its own, on cuda:0: runs MAX_BATCH and RECOMMENDED_BATCH (each must run and peak
 * within the budget: 6.verify), then searches the true largest batch within the budget — the
 * smallest batch above MAX_BATCH that does not fit, then bisection — and compares (6.truth): the
 * probe's answer may not exceed the truth, is exact up to 32 and within 3 % above (the probe's
 * promise, crates/sda-core/src/probe/search.rs). A batch "fits" when it runs and its peak above what
 * was allocated before it (the probe's own measure) is within the budget. The search assumes the
 * peak grows with the batch.
 */
#include "kit.h"

static sda_context *context;
static unsigned runs;

/* 1 when `batch` runs within `budget`; its peak in *peak. */
static int fits(uint32_t batch, uint64_t budget, uint64_t *peak, sda_status *status_out) {
    sda_memory_figures before, after;
    sda_reset_peak(context);
    kit_memory(context, &before);
    sda_status status = sda_run_workload(context, NULL, batch);
    kit_memory(context, &after);
    runs++;
    *peak = after.peak > before.allocated ? after.peak - before.allocated : 0;
    if (status_out) *status_out = status;
    printf("batch %u: %s, peak %.1f MiB%s%s\n", batch, sda_status_str(status), kit_mib(*peak),
           status == SDA_OK ? "" : ": ", status == SDA_OK ? "" : sda_last_error_message());
    fflush(stdout);
    if (status != SDA_OK) sda_clear_cache(context);
    return status == SDA_OK && *peak <= budget;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s BUDGET_BYTES MAX_BATCH RECOMMENDED_BATCH\n", argv[0]);
        return 2;
    }
    uint64_t budget = strtoull(argv[1], NULL, 10);
    uint32_t answer = (uint32_t)strtoul(argv[2], NULL, 10);
    uint32_t recommended = (uint32_t)strtoul(argv[3], NULL, 10);
    const char *device = argc > 4 ? argv[4] : "cuda:0";
    int want_cuda = strncmp(device, "cuda", 4) == 0;
    sda_selection selection;
    context = kit_context(NULL);
    sda_status status = context ? kit_select(context, device, &selection) : SDA_ERR_PANIC;
    if (status != SDA_OK || (want_cuda && selection.kind != SDA_DEVICE_KIND_CUDA) || answer == 0) {
        kit_check("6.verify", 0, "cannot verify: select %s (%s), probe answer %u", sda_status_str(status),
                  sda_last_error_message(), answer);
        kit_check("6.truth", 0, "not searched");
        return 1;
    }

    uint64_t peak = 0, peak_recommended = 0;
    sda_status st = SDA_OK, st_recommended = SDA_OK;
    int ok = fits(answer, budget, &peak, &st);
    int ok_recommended = recommended == 0 || recommended > answer ? 0 : fits(recommended, budget, &peak_recommended, &st_recommended);
    kit_check("6.verify", ok && ok_recommended,
              "in a fresh process: max_batch %u -> %s, peak %.1f MiB; recommended %u -> %s, peak %.1f MiB; "
              "budget %.1f MiB",
              answer, sda_status_str(st), kit_mib(peak), recommended, sda_status_str(st_recommended),
              kit_mib(peak_recommended), kit_mib(budget));

    /* lo fits, hi does not. */
    uint32_t lo = ok ? answer : 0, hi = 0;
    if (!ok) {
        hi = answer;
        lo = 0;
    } else {
        uint32_t step = answer > 32 ? answer * 3 / 100 + 1 : 1;
        while (runs < 40) {
            uint32_t next = lo + step;
            if (!fits(next, budget, &peak, NULL)) {
                hi = next;
                break;
            }
            lo = next;
            step *= 2;
        }
    }
    while (hi > lo + 1 && runs < 40) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (fits(mid, budget, &peak, NULL))
            lo = mid;
        else
            hi = mid;
    }
    if (hi == 0 || hi > lo + 1) {
        kit_check("6.truth", 0, "the search did not close in %u runs (lo %u, hi %u)", runs, lo, hi);
    } else {
        uint32_t truth = lo;
        int pass = answer <= truth && (truth <= 32 ? answer == truth : (uint64_t)answer * 100 >= (uint64_t)truth * 97);
        kit_check("6.truth", pass,
                  "true maximum %u (batch %u does not fit; %u runs), probe said %u: %.2f %% below the truth "
                  "(promise: never above it, exact up to 32, within 3 %% beyond)",
                  truth, hi, runs, answer, truth ? 100.0 * ((double)truth - (double)answer) / truth : 0.0);
    }
    sda_context_free(context);
    return kit_failures ? 1 : 0;
}
