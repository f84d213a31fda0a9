/*
 * abi_test: libmdevmig's C ABI, from C.
 *
 * usage: abi_test KEY.key TRUST.pub OTHER.pub [VALIDATOR]
 *
 *   KEY.key    a signing key; TRUST.pub its public key
 *   OTHER.pub  another key's public key (a trust store that does not know KEY)
 *   VALIDATOR  the mdevmig-validator program, for the runs that validate in the
 *              sandbox (the rest validate in process)
 *
 * Every exported function with bad handles and bad arguments (a status, never a
 * crash), the last errors, streams the destination must refuse (tampered,
 * untrusted, another session, incompatible devices), describe and check, the
 * data fds, and all of it from many threads at once. One line per check:
 *
 *   ok     the check passed
 *   FAIL   it did not: the exit status is 1
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <mdevmig.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1u << 20)
#define BUDGET (4u << 20)

static const char *key_path, *trust_path, *other_path, *validator_path;

/* ---- reporting ---------------------------------------------------------- */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int n_ok, n_fail, n_xfail, n_xpass;

static void vreport(const char *bug, int ok, const char *fmt, va_list ap)
{
    const char *tag = ok ? (bug ? "XPASS" : "ok") : (bug ? "XFAIL" : "FAIL");

    pthread_mutex_lock(&out_lock);
    printf("%-6s ", tag);
    vprintf(fmt, ap);
    if (bug)
        printf(" [known bug: %s]", bug);
    printf("\n");
    fflush(stdout);
    if (!ok && !bug)
        n_fail++;
    else if (!ok)
        n_xfail++;
    else if (bug)
        n_xpass++;
    else
        n_ok++;
    pthread_mutex_unlock(&out_lock);
}

/* One check: prints a line, counts a failure. Returns `ok`. */
static int check(int ok, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(NULL, ok, fmt, ap);
    va_end(ap);
    return ok;
}

/* ---- helpers ------------------------------------------------------------ */

static const char *status_name(int s)
{
    switch (s) {
    case MDEVMIG_OK: return "OK";
    case MDEVMIG_ERROR: return "ERROR";
    case MDEVMIG_EBADHANDLE: return "EBADHANDLE";
    case MDEVMIG_EINVAL: return "EINVAL";
    case MDEVMIG_ENOMSG: return "ENOMSG";
    case MDEVMIG_EPANIC: return "EPANIC";
    default: return "?";
    }
}

/* The last error of `h` (0: the calling thread's) into code/msg ("" when it
 * cannot be read). Returns the status of mdevmig_last_error. */
static int last_error(uint64_t h, char *code, size_t code_len, char *msg, size_t msg_len)
{
    char *c = NULL, *m = NULL;
    int s = mdevmig_last_error(h, &c, &m);

    snprintf(code, code_len, "%s", s == MDEVMIG_OK && c ? c : "");
    if (msg)
        snprintf(msg, msg_len, "%s", s == MDEVMIG_OK && m ? m : "");
    mdevmig_string_free(c);
    mdevmig_string_free(m);
    return s;
}

static int code_is(uint64_t h, const char *want)
{
    char code[128];

    return last_error(h, code, sizeof code, NULL, 0) == MDEVMIG_OK && strcmp(code, want) == 0;
}

/* Checks `got == want` and, when `err_of` is given, that its last error code is
 * `code`. */
static int expect(int got, int want, uint64_t err_of, const char *code, const char *what)
{
    char have[128] = "";

    if (code)
        last_error(err_of, have, sizeof have, NULL, 0);
    return check(got == want && (!code || strcmp(have, code) == 0), "%s -> %s%s%s (got %s%s%s)", what,
                 status_name(want), code ? ", " : "", code ? code : "", status_name(got), code ? ", " : "",
                 code ? have : "");
}

/* The state digest of a device into out[65]; -1 when it has none. */
static int digest(mdevmig_dev dev, char out[65])
{
    char *hex = NULL;
    int s = mdevmig_dev_state_digest(dev, &hex);

    snprintf(out, 65, "%s", s == MDEVMIG_OK && hex ? hex : "n/a");
    mdevmig_string_free(hex);
    return s == MDEVMIG_OK ? 0 : -1;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* Contexts for most tests: a source with the key, destinations that trust it
 * (in process, and in the sandbox), one that trusts another key, one with
 * another session. All source and trusting destination contexts share one
 * session nonce. */
static mdevmig_ctx src_ctx, dst_ctx, sandbox_ctx, other_ctx, session2_ctx;

static mdevmig_ctx new_ctx(const char *key, const char *trust, const char *session, int in_process)
{
    mdevmig_ctx c = 0;
    int ok = mdevmig_ctx_new(&c) == MDEVMIG_OK && c != 0 &&
             (!key || mdevmig_ctx_load_key(c, key) == MDEVMIG_OK) &&
             (!trust || mdevmig_ctx_load_trust(c, trust) == MDEVMIG_OK) &&
             mdevmig_ctx_set_session(c, session) == MDEVMIG_OK &&
             mdevmig_ctx_set_validator(c, in_process ? NULL : validator_path) == MDEVMIG_OK;

    if (!ok) {
        char code[128], msg[512];

        last_error(c, code, sizeof code, msg, sizeof msg);
        check(0, "context setup (key %s, trust %s): %s: %s", key ? key : "-", trust ? trust : "-", code, msg);
    }
    return c;
}

/* ---- migrations --------------------------------------------------------- */

struct outcome {
    int ok;             /* every step but the destination's STOP succeeded */
    char step[512];     /* the first step that did not, and why */
    int dst_stop;       /* status of the destination's RESUMING -> STOP */
    char code[128];     /* its last error code when it failed */
    char src[65], dst_before[65], dst_after[65];
    uint64_t bytes;
};

static int step(struct outcome *o, uint64_t h, int status, const char *what)
{
    char code[128], msg[256];

    if (status == MDEVMIG_OK || !o->ok)
        return status == MDEVMIG_OK;
    o->ok = 0;
    last_error(status == MDEVMIG_EBADHANDLE ? 0 : h, code, sizeof code, msg, sizeof msg);
    snprintf(o->step, sizeof o->step, "%s: %s %s: %s", what, status_name(status), code, msg);
    return 0;
}

/* Moves the source's bytes to the destination until the source has no more
 * for now (ENOMSG) or ends. After the destination refused a write the rest is
 * drained and dropped (the reason comes with its STOP). */
static int pump(mdevmig_dev src, mdevmig_dev dst, uint8_t *buf, int *refused, uint64_t *moved)
{
    for (;;) {
        size_t got = 0;
        int s = mdevmig_dev_read(src, buf, BUF_SIZE, &got);

        if (s == MDEVMIG_ENOMSG)
            return MDEVMIG_OK;
        if (s != MDEVMIG_OK || got == 0)
            return s;
        if (!*refused && mdevmig_dev_write(dst, buf, got) != MDEVMIG_OK)
            *refused = 1;
        *moved += got;
    }
}

/* STOP_COPY with the whole stream collected, one byte in its middle flipped,
 * then written to the destination. */
static int pump_tampered(mdevmig_dev src, mdevmig_dev dst, uint8_t *buf, uint64_t *moved)
{
    size_t len = 0, cap = 0, got = 0;
    uint8_t *all = NULL;
    int s;

    while ((s = mdevmig_dev_read(src, buf, BUF_SIZE, &got)) == MDEVMIG_OK && got > 0) {
        if (len + got > cap) {
            uint8_t *grown = realloc(all, cap = 2 * (len + got));

            if (!grown) {
                free(all);
                return MDEVMIG_ERROR;
            }
            all = grown;
        }
        memcpy(all + len, buf, got);
        len += got;
    }
    if (s == MDEVMIG_OK && len > 0) {
        all[len / 2] ^= 0x40;
        for (size_t off = 0; off < len; off += BUF_SIZE) {
            size_t n = len - off < BUF_SIZE ? len - off : BUF_SIZE;

            if (mdevmig_dev_write(dst, all + off, n) != MDEVMIG_OK)
                break; /* refused: the reason comes with STOP */
        }
    }
    *moved = len;
    free(all);
    return s;
}

/* A migration the QEMU way (minivmm's loop, at most 5 rounds), or with
 * `tamper`, STOP_COPY only with a byte flipped in the middle of the stream. */
static void migrate(mdevmig_ctx sctx, mdevmig_ctx dctx, const char *sspec, const char *dspec, int tamper,
                    struct outcome *o)
{
    mdevmig_dev src = 0, dst = 0;
    uint64_t flags = 0, left = 0, initial, dirty;
    uint8_t *buf = malloc(BUF_SIZE);
    int refused = 0;

    memset(o, 0, sizeof *o);
    o->ok = buf != NULL;
    strcpy(o->step, buf ? "" : "malloc");
    strcpy(o->src, "n/a");
    strcpy(o->dst_after, "n/a");
    if (!step(o, dctx, mdevmig_dev_open(dctx, dspec, &dst), "open destination") ||
        !step(o, sctx, mdevmig_dev_open(sctx, sspec, &src), "open source") ||
        !step(o, src, mdevmig_dev_migration_flags(src, &flags), "migration flags"))
        goto out;
    digest(dst, o->dst_before);
    if (!step(o, dst, mdevmig_dev_set_state(dst, MDEVMIG_STATE_RESUMING, NULL), "destination RESUMING"))
        goto out;
    if (!tamper && (flags & MDEVMIG_MIGRATION_PRE_COPY)) {
        if (!step(o, src, mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY, NULL), "source PRE_COPY"))
            goto out;
        for (int round = 0; round < 5; round++) {
            if (!step(o, src, pump(src, dst, buf, &refused, &o->bytes), "read (PRE_COPY)") ||
                !step(o, src, mdevmig_dev_precopy_info(src, &initial, &dirty), "precopy info") ||
                !step(o, src, mdevmig_dev_data_size(src, &left), "data size"))
                goto out;
            if (left <= BUDGET || refused)
                break;
        }
        if ((flags & MDEVMIG_MIGRATION_P2P) &&
            !step(o, src, mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY_P2P, NULL), "source PRE_COPY_P2P"))
            goto out;
    }
    if (!step(o, src, mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP_COPY, NULL), "source STOP_COPY") ||
        !step(o, src, tamper ? pump_tampered(src, dst, buf, &o->bytes) : pump(src, dst, buf, &refused, &o->bytes),
              "read (STOP_COPY)") ||
        !step(o, src, mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP, NULL), "source STOP"))
        goto out;
    o->dst_stop = mdevmig_dev_set_state(dst, MDEVMIG_STATE_STOP, NULL);
    if (o->dst_stop != MDEVMIG_OK)
        last_error(dst, o->code, sizeof o->code, NULL, 0);
    digest(src, o->src);
    digest(dst, o->dst_after);
out:
    if (src && mdevmig_dev_free(src) != MDEVMIG_OK)
        step(o, 0, MDEVMIG_ERROR, "free source");
    if (dst && mdevmig_dev_free(dst) != MDEVMIG_OK)
        step(o, 0, MDEVMIG_ERROR, "free destination");
    free(buf);
}

/* A migration that must succeed with matching digests. */
static int migrates(mdevmig_ctx sctx, mdevmig_ctx dctx, const char *sspec, const char *dspec, const char *label)
{
    struct outcome o;

    migrate(sctx, dctx, sspec, dspec, 0, &o);
    return check(o.ok && o.dst_stop == MDEVMIG_OK && strcmp(o.src, "n/a") != 0 && strcmp(o.src, o.dst_after) == 0,
                 "%s: %s -> %s: %" PRIu64 " bytes, digests %.12s %s %.12s%s%s%s%s", label, sspec, dspec, o.bytes,
                 o.src, strcmp(o.src, o.dst_after) == 0 ? "==" : "!=", o.dst_after, o.ok ? "" : "; failed at ",
                 o.step, o.dst_stop ? "; destination STOP: " : "", o.code);
}

/* A migration whose destination must refuse with a code starting `prefix`
 * (e.g. "auth.") and stay as it was. */
static int refused(mdevmig_ctx sctx, mdevmig_ctx dctx, const char *sspec, const char *dspec, int tamper,
                   const char *prefix, const char *label)
{
    struct outcome o;

    migrate(sctx, dctx, sspec, dspec, tamper, &o);
    return check(o.ok && o.dst_stop == MDEVMIG_ERROR && strncmp(o.code, prefix, strlen(prefix)) == 0 &&
                     strcmp(o.dst_before, "n/a") != 0 && strcmp(o.dst_before, o.dst_after) == 0,
                 "%s: destination STOP -> %s %s (want %s*), digest %s%s%s", label, status_name(o.dst_stop), o.code,
                 prefix, strcmp(o.dst_before, o.dst_after) == 0 ? "unchanged" : "CHANGED",
                 o.ok ? "" : "; failed at ", o.step);
}

/* ---- bad handles -------------------------------------------------------- */

/* Each wrapper calls one function with the handle under test and otherwise
 * valid arguments. An out-parameter written despite the failure is a failure
 * (returned as 1000). */
static mdevmig_ctx g_ctx;     /* a live context, for calls that take both */
static mdevmig_dev g_dev;     /* a live device, for calls that take both */
static const char *g_source_json;
static char g_nonce[65];

#define SENTINEL 0x5eed5eedu

static int ctx_free_(uint64_t h) { return mdevmig_ctx_free(h); }
static int ctx_load_key_(uint64_t h) { return mdevmig_ctx_load_key(h, key_path); }
static int ctx_load_trust_(uint64_t h) { return mdevmig_ctx_load_trust(h, trust_path); }
static int ctx_set_session_(uint64_t h) { return mdevmig_ctx_set_session(h, g_nonce); }
static int ctx_set_policy_(uint64_t h) { return mdevmig_ctx_set_policy(h, "{}"); }
static int ctx_set_validator_(uint64_t h) { return mdevmig_ctx_set_validator(h, NULL); }
static int dev_open_(uint64_t h)
{
    mdevmig_dev d = SENTINEL;
    int s = mdevmig_dev_open(h, "sim:mtty/mtty-1", &d);

    return s != MDEVMIG_OK && d != SENTINEL ? 1000 : s;
}
static int dev_check_ctx_(uint64_t h)
{
    char *v = NULL;
    int s = mdevmig_dev_check(g_dev, h, g_source_json, &v);

    mdevmig_string_free(v);
    return s != MDEVMIG_OK && v ? 1000 : s;
}
static int last_error_(uint64_t h)
{
    char *c = NULL, *m = NULL;
    int s = mdevmig_last_error(h, &c, &m);

    mdevmig_string_free(c);
    mdevmig_string_free(m);
    return s != MDEVMIG_OK && (c || m) ? 1000 : s;
}
static int dev_free_(uint64_t h) { return mdevmig_dev_free(h); }
static int dev_migration_flags_(uint64_t h)
{
    uint64_t f = SENTINEL;
    int s = mdevmig_dev_migration_flags(h, &f);

    return s != MDEVMIG_OK && f != SENTINEL ? 1000 : s;
}
static int dev_get_state_(uint64_t h)
{
    uint32_t st = SENTINEL;
    int s = mdevmig_dev_get_state(h, &st);

    return s != MDEVMIG_OK && st != SENTINEL ? 1000 : s;
}
static int dev_set_state_(uint64_t h)
{
    int fd = (int)SENTINEL;
    int s = mdevmig_dev_set_state(h, MDEVMIG_STATE_STOP, &fd);

    return s != MDEVMIG_OK && fd != (int)SENTINEL ? 1000 : s;
}
static int dev_read_(uint64_t h)
{
    uint8_t buf[64];
    size_t got = SENTINEL;
    int s = mdevmig_dev_read(h, buf, sizeof buf, &got);

    return s != MDEVMIG_OK && got != SENTINEL ? 1000 : s;
}
static int dev_write_(uint64_t h)
{
    static const uint8_t buf[64];

    return mdevmig_dev_write(h, buf, sizeof buf);
}
static int dev_precopy_info_(uint64_t h)
{
    uint64_t i = SENTINEL, d = SENTINEL;
    int s = mdevmig_dev_precopy_info(h, &i, &d);

    return s != MDEVMIG_OK && (i != SENTINEL || d != SENTINEL) ? 1000 : s;
}
static int dev_data_size_(uint64_t h)
{
    uint64_t n = SENTINEL;
    int s = mdevmig_dev_data_size(h, &n);

    return s != MDEVMIG_OK && n != SENTINEL ? 1000 : s;
}
static int dev_describe_(uint64_t h)
{
    char *j = NULL;
    int s = mdevmig_dev_describe(h, &j);

    mdevmig_string_free(j);
    return s != MDEVMIG_OK && j ? 1000 : s;
}
static int dev_check_dev_(uint64_t h)
{
    char *v = NULL;
    int s = mdevmig_dev_check(h, g_ctx, g_source_json, &v);

    mdevmig_string_free(v);
    return s != MDEVMIG_OK && v ? 1000 : s;
}
static int dev_state_digest_(uint64_t h)
{
    char *x = NULL;
    int s = mdevmig_dev_state_digest(h, &x);

    mdevmig_string_free(x);
    return s != MDEVMIG_OK && x ? 1000 : s;
}

struct api_call {
    const char *name;
    int (*call)(uint64_t h);
};

/* Every function that takes a context handle (last_error: any handle). */
static const struct api_call ctx_calls[] = {
    {"mdevmig_ctx_free", ctx_free_},
    {"mdevmig_ctx_load_key", ctx_load_key_},
    {"mdevmig_ctx_load_trust", ctx_load_trust_},
    {"mdevmig_ctx_set_session", ctx_set_session_},
    {"mdevmig_ctx_set_policy", ctx_set_policy_},
    {"mdevmig_ctx_set_validator", ctx_set_validator_},
    {"mdevmig_dev_open", dev_open_},
    {"mdevmig_dev_check (ctx)", dev_check_ctx_},
    {"mdevmig_last_error", last_error_},
};

/* Every function that takes a device handle. */
static const struct api_call dev_calls[] = {
    {"mdevmig_dev_free", dev_free_},
    {"mdevmig_dev_migration_flags", dev_migration_flags_},
    {"mdevmig_dev_get_state", dev_get_state_},
    {"mdevmig_dev_set_state", dev_set_state_},
    {"mdevmig_dev_read", dev_read_},
    {"mdevmig_dev_write", dev_write_},
    {"mdevmig_dev_precopy_info", dev_precopy_info_},
    {"mdevmig_dev_data_size", dev_data_size_},
    {"mdevmig_dev_describe", dev_describe_},
    {"mdevmig_dev_check (dev)", dev_check_dev_},
    {"mdevmig_dev_state_digest", dev_state_digest_},
    {"mdevmig_last_error", last_error_},
};

#define N_CTX_CALLS (sizeof ctx_calls / sizeof ctx_calls[0])
#define N_DEV_CALLS (sizeof dev_calls / sizeof dev_calls[0])

/* Where a bad-handle failure of `call` is recorded: the thread (0), except for
 * mdevmig_dev_check with a bad context, whose device is a usable handle. */
/* Where a call's EBADHANDLE is recorded: always the calling thread's last
 * error (mdevmig_dev_check with a bad context included: the device is not
 * touched). */
static uint64_t error_holder(int (*call)(uint64_t))
{
    (void)call;
    return 0;
}

/* Leaves a known error as the thread's last error, so the next check sees
 * whether a call replaced it. */
static void mark_thread_error(void)
{
    mdevmig_dev_read(0, NULL, 0, NULL); /* EINVAL before the handle: usage.bad_arguments */
}

/* Sweeps `calls` with handles that are not theirs: 0, made-up, freed (all
 * must leave usage.bad_handle as the thread's last error), and `wrong_kind`,
 * a live handle of the other kind (which must not be touched). */
static void sweep(const struct api_call *calls, size_t n, const char *kind, uint64_t freed, uint64_t wrong_kind,
                  uint64_t live)
{
    const uint64_t handles[] = {0, UINT64_MAX, 1ull << 63, 0xdeadbeefcafe0000ull | (1ull << 60), live + 1000000,
                                freed};
    const char *names[] = {"0", "UINT64_MAX", "2^63", "made-up", "live+10^6", "freed"};

    for (size_t i = 0; i < n; i++) {
        int all = 1, thread_errors = 1;
        char detail[256] = "";

        for (size_t j = 0; j < sizeof handles / sizeof handles[0]; j++) {
            int s;

            if (handles[j] == 0 && calls[i].call == last_error_)
                continue; /* 0 is the thread's */
            mark_thread_error();
            s = calls[i].call(handles[j]);
            if (s != MDEVMIG_EBADHANDLE) {
                all = 0;
                snprintf(detail, sizeof detail, "; %s gave %d", names[j], s);
            } else if (calls[i].call != last_error_ && !code_is(error_holder(calls[i].call), "usage.bad_handle")) {
                thread_errors = 0;
                snprintf(detail, sizeof detail, "; %s left no usage.bad_handle", names[j]);
            }
        }
        check(all && thread_errors, "%s with a 0, made-up or freed %s handle -> EBADHANDLE, %s error "
              "usage.bad_handle%s", calls[i].name, kind, error_holder(calls[i].call) ? "the device's" : "thread",
              detail);
    }
    char misrecorded[1024] = "";
    int n_checked = 0, n_misrecorded = 0;

    for (size_t i = 0; i < n; i++) {
        char before[128], after[128];
        int s, thread_ok;

        if (calls[i].call == last_error_ || calls[i].call == dev_check_ctx_)
            continue; /* any live handle is valid for mdevmig_last_error; dev_check's error goes to its device */
        /* Give the live object of the other kind an error of its own. */
        if (wrong_kind == g_ctx)
            mdevmig_ctx_set_policy(wrong_kind, "{");
        else
            mdevmig_dev_precopy_info(wrong_kind, &(uint64_t){0}, &(uint64_t){0});
        last_error(wrong_kind, before, sizeof before, NULL, 0);
        mark_thread_error();
        s = calls[i].call(wrong_kind);
        thread_ok = code_is(0, "usage.bad_handle");
        last_error(wrong_kind, after, sizeof after, NULL, 0);
        check(s == MDEVMIG_EBADHANDLE, "%s with a live handle of the other kind -> EBADHANDLE (got %s)",
              calls[i].name, status_name(s));
        if (calls[i].call == ctx_free_ || calls[i].call == dev_free_) {
            /* The frees record their errors as the thread's: not affected. */
            check(thread_ok && strcmp(before, after) == 0, "%s with the other kind: thread error usage.bad_handle, "
                  "that object's last error kept (%s)", calls[i].name, after);
            continue;
        }
        n_checked++;
        if (!thread_ok || strcmp(before, after) != 0) {
            n_misrecorded++;
            snprintf(misrecorded + strlen(misrecorded), sizeof misrecorded - strlen(misrecorded), "%s%s",
                     n_misrecorded > 1 ? ", " : "", calls[i].name);
        }
    }
    check(n_misrecorded == 0, "a live %s handle given as a %s: thread error usage.bad_handle, "
              "its own last error kept (%d of %d calls replaced it with usage.bad_handle: %s)",
              wrong_kind == g_ctx ? "context" : "device", kind, n_misrecorded, n_checked,
              n_misrecorded ? misrecorded : "none");
}

static void test_bad_handles(void)
{
    mdevmig_ctx freed_ctx = 0;
    mdevmig_dev freed_dev = 0;
    uint32_t st = 0;
    char code[128], msg[256], want[64];

    printf("--- bad handles\n");
    mdevmig_ctx_new(&freed_ctx);
    mdevmig_dev_open(g_ctx, "sim:mtty/mtty-1", &freed_dev);
    check(mdevmig_ctx_free(freed_ctx) == MDEVMIG_OK && mdevmig_dev_free(freed_dev) == MDEVMIG_OK,
          "a context and a device to free, freed");
    sweep(ctx_calls, N_CTX_CALLS, "context", freed_ctx, g_dev, g_ctx);
    sweep(dev_calls, N_DEV_CALLS, "device", freed_dev, g_ctx, g_dev);
    check(mdevmig_dev_get_state(g_dev, &st) == MDEVMIG_OK && st == MDEVMIG_STATE_RUNNING &&
              mdevmig_ctx_set_policy(g_ctx, NULL) == MDEVMIG_OK,
          "mdevmig_ctx_free(device) and mdevmig_dev_free(context) freed neither");
    check(mdevmig_ctx_free(freed_ctx) == MDEVMIG_EBADHANDLE && mdevmig_dev_free(freed_dev) == MDEVMIG_EBADHANDLE,
          "a second free -> EBADHANDLE");

    mdevmig_dev_free(0xdeadbeefcafe1234ull);
    last_error(0, code, sizeof code, msg, sizeof msg);
    snprintf(want, sizeof want, "%" PRIu64, (uint64_t)0xdeadbeefcafe1234ull);
    check(strstr(msg, want) != NULL, "mdevmig_dev_free(made-up): the message names the handle "
              "(\"%s\")", msg);
}

/* ---- bad arguments ------------------------------------------------------ */

static void test_bad_arguments(void)
{
    static const char bad_utf8[] = {'s', 'i', 'm', ':', (char)0xff, (char)0xfe, 0};
    mdevmig_ctx c = 0;
    mdevmig_dev d = 0, none = 0;
    uint8_t buf[16];
    size_t got;
    uint64_t u;
    uint32_t st;
    char *s = NULL, *json = NULL, not_a_key[] = "/tmp/abi_test.XXXXXX";
    int fd, ok;

    printf("--- bad arguments\n");
    fd = mkstemp(not_a_key); /* mode 0600 */
    if (fd < 0 || write(fd, "not a key\n", 10) != 10)
        not_a_key[0] = 0;
    if (fd >= 0)
        close(fd);
    /* A context without key or trust, and a device from it. */
    if (!check(mdevmig_ctx_new(&c) == MDEVMIG_OK && mdevmig_dev_open(c, "sim:mtty/mtty-1", &d) == MDEVMIG_OK,
               "a context and a device to pass bad arguments to"))
        return;
    expect(mdevmig_last_error(0, NULL, &s), MDEVMIG_EINVAL, 0, NULL, "mdevmig_last_error(0, NULL, &msg)");
    expect(mdevmig_last_error(c, &s, NULL), MDEVMIG_EINVAL, 0, NULL, "mdevmig_last_error(ctx, &code, NULL)");
    expect(mdevmig_ctx_load_key(c, NULL), MDEVMIG_EINVAL, c, "usage.bad_arguments", "mdevmig_ctx_load_key(ctx, NULL)");
    expect(mdevmig_ctx_load_key(c, bad_utf8), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_load_key(ctx, not UTF-8)");
    expect(mdevmig_ctx_load_trust(c, NULL), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_load_trust(ctx, NULL)");
    expect(mdevmig_ctx_load_trust(c, bad_utf8), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_load_trust(ctx, not UTF-8)");
    expect(mdevmig_ctx_set_session(c, bad_utf8), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_set_session(ctx, not UTF-8)");
    expect(mdevmig_ctx_set_policy(c, bad_utf8), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_set_policy(ctx, not UTF-8)");
    expect(mdevmig_ctx_set_validator(c, bad_utf8), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_ctx_set_validator(ctx, not UTF-8)");
    expect(mdevmig_dev_open(c, NULL, &none), MDEVMIG_EINVAL, c, "usage.bad_arguments", "mdevmig_dev_open(ctx, NULL, &dev)");
    expect(mdevmig_dev_open(c, bad_utf8, &none), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_dev_open(ctx, not UTF-8, &dev)");
    expect(mdevmig_dev_open(c, "sim:mtty/mtty-1", NULL), MDEVMIG_EINVAL, c, "usage.bad_arguments",
           "mdevmig_dev_open(ctx, spec, NULL)");
    expect(mdevmig_dev_migration_flags(d, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_migration_flags(dev, NULL)");
    expect(mdevmig_dev_get_state(d, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments", "mdevmig_dev_get_state(dev, NULL)");
    expect(mdevmig_dev_set_state(d, MDEVMIG_STATE_ERROR, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_set_state(dev, ERROR)");
    expect(mdevmig_dev_set_state(d, 8, &fd), MDEVMIG_EINVAL, d, "usage.bad_arguments", "mdevmig_dev_set_state(dev, 8)");
    expect(mdevmig_dev_set_state(d, UINT32_MAX, &fd), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_set_state(dev, UINT32_MAX)");
    ok = mdevmig_dev_get_state(d, &st) == MDEVMIG_OK && st == MDEVMIG_STATE_RUNNING;
    check(ok, "the device is still RUNNING after refused state numbers (state %u)", st);
    expect(mdevmig_dev_read(d, NULL, sizeof buf, &got), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_read(dev, NULL, 16, &got)");
    expect(mdevmig_dev_read(d, buf, 0, &got), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_read(dev, buf, 0, &got)");
    expect(mdevmig_dev_read(d, buf, sizeof buf, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_read(dev, buf, 16, NULL)");
    expect(mdevmig_dev_write(d, NULL, 16), MDEVMIG_EINVAL, d, "usage.bad_arguments", "mdevmig_dev_write(dev, NULL, 16)");
    expect(mdevmig_dev_write(d, NULL, 0), MDEVMIG_ERROR, d, "device.data_error",
           "mdevmig_dev_write(dev, NULL, 0) in RUNNING (an empty write, but no stream)");
    expect(mdevmig_dev_precopy_info(d, NULL, &u), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_precopy_info(dev, NULL, &dirty)");
    expect(mdevmig_dev_precopy_info(d, &u, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_precopy_info(dev, &initial, NULL)");
    expect(mdevmig_dev_data_size(d, NULL), MDEVMIG_EINVAL, d, "usage.bad_arguments", "mdevmig_dev_data_size(dev, NULL)");
    expect(mdevmig_dev_check(d, c, NULL, &json), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_check(dev, ctx, NULL, &verdict)");
    expect(mdevmig_dev_check(d, c, bad_utf8, &json), MDEVMIG_EINVAL, d, "usage.bad_arguments",
           "mdevmig_dev_check(dev, ctx, not UTF-8, &verdict)");
    check(json == NULL && none == 0, "no verdict or device was returned by the refused calls");

    /* Valid but wrong: an operation failure, recorded on the handle. */
    expect(mdevmig_ctx_set_session(c, "xyz"), MDEVMIG_ERROR, c, "usage.bad_arguments",
           "mdevmig_ctx_set_session(ctx, \"xyz\")");
    expect(mdevmig_ctx_set_policy(c, "{\"no_such_key\": 1}"), MDEVMIG_ERROR, c, "format.bad_descriptor",
           "mdevmig_ctx_set_policy(ctx, unknown key)");
    expect(mdevmig_ctx_load_key(c, "/nonexistent/k.key"), MDEVMIG_ERROR, c, "io.open",
           "mdevmig_ctx_load_key(ctx, missing file)");
    expect(mdevmig_ctx_load_key(c, trust_path), MDEVMIG_ERROR, c, "auth.key_permissions",
           "mdevmig_ctx_load_key(ctx, a world-readable file)");
    if (not_a_key[0])
        expect(mdevmig_ctx_load_key(c, not_a_key), MDEVMIG_ERROR, c, "format.bad_key_file",
               "mdevmig_ctx_load_key(ctx, a 0600 file that is no key)");
    expect(mdevmig_dev_open(c, "bogus", &none), MDEVMIG_ERROR, c, "usage.bad_device_spec",
           "mdevmig_dev_open(ctx, \"bogus\")");
    expect(mdevmig_dev_check(d, c, "{", &json), MDEVMIG_ERROR, d, "format.bad_descriptor",
           "mdevmig_dev_check(dev, ctx, \"{\")");
    expect(mdevmig_dev_precopy_info(d, &u, &u), MDEVMIG_ERROR, d, "device.data_error",
           "mdevmig_dev_precopy_info in RUNNING");
    expect(mdevmig_dev_read(d, buf, sizeof buf, &got), MDEVMIG_ERROR, d, "device.data_error",
           "mdevmig_dev_read in RUNNING");
    expect(mdevmig_dev_set_state(d, MDEVMIG_STATE_RESUMING, NULL), MDEVMIG_ERROR, d, "usage.bad_arguments",
           "mdevmig_dev_set_state(RESUMING) from a context without trust");
    ok = mdevmig_dev_get_state(d, &st) == MDEVMIG_OK && st == MDEVMIG_STATE_ERROR;
    check(ok, "a failed arc leaves the device in ERROR (state %u)", st);
    check(mdevmig_dev_free(d) == MDEVMIG_OK && mdevmig_ctx_free(c) == MDEVMIG_OK, "freed");
    if (not_a_key[0])
        unlink(not_a_key);
}

/* ---- last errors -------------------------------------------------------- */

static void *fresh_thread_error(void *arg)
{
    char *code = arg;

    last_error(0, code, 128, NULL, 0);
    return NULL;
}

static void test_last_errors(void)
{
    mdevmig_ctx a = 0, b = 0, c = 0;
    mdevmig_dev d = 0, spare = 0;
    char code[128], msg[256], other[128] = "?";
    pthread_t t;
    int ok;

    printf("--- last errors\n");
    ok = mdevmig_ctx_new(&a) == MDEVMIG_OK && last_error(a, code, sizeof code, msg, sizeof msg) == MDEVMIG_OK &&
         code[0] == 0 && msg[0] == 0;
    check(ok, "a new context's last error is \"\" (code \"%s\")", code);
    mdevmig_dev_get_state(0, NULL);
    check(code_is(0, "usage.bad_handle"), "the thread's error after a call with handle 0 is usage.bad_handle");
    pthread_create(&t, NULL, fresh_thread_error, other);
    pthread_join(t, NULL);
    check(other[0] == 0, "another thread's last error is its own (\"%s\")", other);
    expect(mdevmig_dev_open(a, "sim:nope/x", &d), MDEVMIG_ERROR, a, "usage.bad_device_spec",
           "a failed open: the context's last error");
    last_error(a, code, sizeof code, msg, sizeof msg);
    check(msg[0] != 0, "... with a message (\"%s\")", msg);
    check(code_is(0, "usage.bad_handle"), "... and the thread's last error is untouched");
    check(mdevmig_dev_open(a, "sim:mtty/mtty-2", &d) == MDEVMIG_OK && code_is(a, "usage.bad_device_spec"),
          "a success leaves the context's last error as it was");
    expect(mdevmig_dev_precopy_info(d, &(uint64_t){0}, &(uint64_t){0}), MDEVMIG_ERROR, d, "device.data_error",
           "a failed device operation: the device's last error");
    check(code_is(a, "usage.bad_device_spec"), "... and the context's is its own");
    check(mdevmig_dev_free(d) == MDEVMIG_OK && last_error_(d) == MDEVMIG_EBADHANDLE,
          "a freed device has no last error: EBADHANDLE");

    /* mdevmig_ctx_new(NULL) must not leave a context behind. Handles count up,
     * so an orphan would sit between two new ones. */
    mdevmig_ctx_new(&b);
    expect(mdevmig_ctx_new(NULL), MDEVMIG_EINVAL, 0, "usage.bad_arguments", "mdevmig_ctx_new(NULL)");
    mdevmig_ctx_new(&c);
    if (c == b + 2) {
        int live = last_error_(b + 1) == MDEVMIG_OK;

        if (live) /* the orphan: free it, so the test itself leaks nothing */
            mdevmig_ctx_free(b + 1);
        check(!live, "mdevmig_ctx_new(NULL) leaves no context behind");
    } else {
        check(1, "mdevmig_ctx_new(NULL) leaves no context behind (handles not consecutive: not observable)");
    }
    mdevmig_dev_open(b, "sim:mtty/mtty-1", &spare);
    check(mdevmig_ctx_free(a) == MDEVMIG_OK && mdevmig_ctx_free(b) == MDEVMIG_OK && mdevmig_ctx_free(c) == MDEVMIG_OK,
          "contexts freed");
    check(mdevmig_dev_get_state(spare, &(uint32_t){0}) == MDEVMIG_OK && mdevmig_dev_free(spare) == MDEVMIG_OK,
          "a device outlives its freed context");
}

/* ---- describe and check ------------------------------------------------- */

static int verdict(mdevmig_dev dev, mdevmig_ctx ctx, const char *json, int want_compatible, const char *reason,
                   const char *label)
{
    char *v = NULL;
    int s = mdevmig_dev_check(dev, ctx, json, &v);
    int ok = s == MDEVMIG_OK && v &&
             strstr(v, want_compatible ? "\"compatible\":true" : "\"compatible\":false") != NULL &&
             (!reason || strstr(v, reason) != NULL);

    check(ok, "check %s -> %s%s%s (%s: %.160s)", label, want_compatible ? "compatible" : "incompatible",
          reason ? ", " : "", reason ? reason : "", status_name(s), v ? v : "");
    mdevmig_string_free(v);
    return ok;
}

static void test_describe_check(void)
{
    mdevmig_ctx policy_ctx = 0;
    mdevmig_dev m2 = 0, m2b = 0, m1 = 0, g64 = 0, g256 = 0;
    char *j2 = NULL, *j64 = NULL, *big;
    int ok;

    printf("--- describe and check\n");
    if (!check(mdevmig_ctx_new(&policy_ctx) == MDEVMIG_OK && mdevmig_dev_open(g_ctx, "sim:mtty/mtty-2", &m2) == 0 &&
                   mdevmig_dev_open(g_ctx, "sim:mtty/mtty-2,seed=7", &m2b) == 0 &&
                   mdevmig_dev_open(g_ctx, "sim:mtty/mtty-1", &m1) == 0 &&
                   mdevmig_dev_open(g_ctx, "sim:simgpu/vgpu-64m", &g64) == 0 &&
                   mdevmig_dev_open(g_ctx, "sim:simgpu/vgpu-256m", &g256) == 0,
               "devices to describe"))
        goto out;
    ok = mdevmig_dev_describe(m2, &j2) == MDEVMIG_OK && j2 && strstr(j2, "\"device_type\":\"mtty-2\"") &&
         strstr(j2, "\"schema\":\"mdevmig.descriptor/1\"");
    check(ok, "describe mtty-2: a descriptor (%.60s...)", j2 ? j2 : "");
    check(mdevmig_dev_describe(g64, &j64) == MDEVMIG_OK && j64 && strstr(j64, "\"device_type\":\"vgpu-64m\""),
          "describe vgpu-64m: a descriptor");
    if (!j2 || !j64)
        goto out;
    verdict(m2b, g_ctx, j2, 1, "\"action\":\"send\"", "mtty-2 -> mtty-2");
    verdict(m1, g_ctx, j2, 0, "compat.type_mismatch", "mtty-2 -> mtty-1");
    verdict(g256, g_ctx, j64, 0, "compat.", "vgpu-64m -> vgpu-256m");
    verdict(m2b, g_ctx, j64, 0, "compat.vendor_mismatch", "vgpu-64m -> mtty-2");
    verdict(g64, g_ctx, j64, 1, NULL, "vgpu-64m -> vgpu-64m (itself)");
    check(mdevmig_ctx_set_policy(policy_ctx, "{\"refuse_versions\": [1]}") == MDEVMIG_OK,
          "set a policy that refuses state version 1");
    verdict(m2b, policy_ctx, j2, 0, "compat.version_refused", "mtty-2 -> mtty-2 under that policy");
    check(mdevmig_ctx_set_policy(policy_ctx, NULL) == MDEVMIG_OK, "policy back to the default");
    verdict(m2b, policy_ctx, j2, 1, NULL, "mtty-2 -> mtty-2 under the default policy");
    big = malloc((2u << 20) + 1);
    if (big) {
        memset(big, ' ', 2u << 20);
        big[2u << 20] = 0;
        char *v = NULL;

        expect(mdevmig_dev_check(m2b, g_ctx, big, &v), MDEVMIG_ERROR, m2b, "limit.input_too_large",
               "check with a 2 MiB descriptor");
        mdevmig_string_free(v);
        free(big);
    }
out:
    mdevmig_string_free(j2);
    mdevmig_string_free(j64);
    mdevmig_dev_free(m2);
    mdevmig_dev_free(m2b);
    mdevmig_dev_free(m1);
    mdevmig_dev_free(g64);
    mdevmig_dev_free(g256);
    mdevmig_ctx_free(policy_ctx);
}

/* ---- migrations, refused streams, data fds ------------------------------ */

static void test_migrations(void)
{
    printf("--- migrations\n");
    migrates(src_ctx, dst_ctx, "sim:mtty/mtty-2,seed=1", "sim:mtty/mtty-2,seed=2", "in process");
    migrates(src_ctx, dst_ctx, "sim:simgpu/vgpu-64m,seed=1,dirty-rate=4M", "sim:simgpu/vgpu-64m,seed=2", "in process");
    migrates(src_ctx, dst_ctx, "sim:mtty/mtty-2,seed=3,flags=1", "sim:mtty/mtty-2,seed=4", "no PRE_COPY");
    if (validator_path)
        migrates(src_ctx, sandbox_ctx, "sim:mtty/mtty-2,seed=5", "sim:mtty/mtty-2,seed=6", "sandboxed validator");

    printf("--- refused streams\n");
    refused(src_ctx, dst_ctx, "sim:simgpu/vgpu-64m,seed=1", "sim:simgpu/vgpu-64m,seed=2", 1, "auth.",
            "tampered vgpu-64m stream (a byte in the middle flipped)");
    refused(src_ctx, dst_ctx, "sim:mtty/mtty-2,seed=1", "sim:mtty/mtty-2,seed=2", 1, "auth.",
            "tampered mtty-2 stream");
    refused(src_ctx, other_ctx, "sim:mtty/mtty-2,seed=1", "sim:mtty/mtty-2,seed=2", 0, "auth.untrusted_key",
            "untrusted key");
    refused(src_ctx, session2_ctx, "sim:mtty/mtty-2,seed=1", "sim:mtty/mtty-2,seed=2", 0, "auth.session_mismatch",
            "another session's stream");
    refused(src_ctx, dst_ctx, "sim:mtty/mtty-2,seed=1", "sim:mtty/mtty-1,seed=2", 0, "compat.",
            "incompatible mtty-2 -> mtty-1");
    refused(src_ctx, validator_path ? sandbox_ctx : dst_ctx, "sim:simgpu/vgpu-64m,seed=1",
            "sim:simgpu/vgpu-256m,seed=2", 0, "compat.", "incompatible vgpu-64m -> vgpu-256m");
}

/* The migration through the data fds themselves, as a VMM that polls them. */
static void test_data_fds(void)
{
    mdevmig_dev src = 0, dst = 0;
    int sfd = -2, dfd = -2, fd = -2, flags, ok;
    uint8_t *buf = malloc(BUF_SIZE);
    char a[65], b[65];
    uint64_t moved = 0;
    ssize_t n;

    printf("--- data fds\n");
    if (!buf || !check(mdevmig_dev_open(src_ctx, "sim:mtty/mtty-2,seed=11", &src) == MDEVMIG_OK &&
                           mdevmig_dev_open(dst_ctx, "sim:mtty/mtty-2,seed=12", &dst) == MDEVMIG_OK,
                       "devices for the data fds"))
        goto out;
    ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY, &fd) == MDEVMIG_OK && fd >= 0 &&
         (flags = fcntl(fd, F_GETFL)) >= 0 && (flags & O_NONBLOCK);
    check(ok, "PRE_COPY returns a non-blocking data fd (%d)", fd);
    if (fd >= 0)
        close(fd);
    ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_RUNNING, &fd) == MDEVMIG_OK && fd == -1;
    check(ok, "back to RUNNING (the save abandoned): no fd (%d)", fd);
    ok = mdevmig_dev_set_state(dst, MDEVMIG_STATE_RESUMING, &dfd) == MDEVMIG_OK && dfd >= 0;
    check(ok, "RESUMING returns a data fd to write (%d)", dfd);
    ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP_COPY, &sfd) == MDEVMIG_OK && sfd >= 0 &&
         (flags = fcntl(sfd, F_GETFL)) >= 0 && !(flags & O_NONBLOCK);
    check(ok, "STOP_COPY from RUNNING returns a blocking data fd (%d)", sfd);
    if (sfd < 0 || dfd < 0)
        goto out;
    while ((n = read(sfd, buf, BUF_SIZE)) > 0) {
        if (write(dfd, buf, (size_t)n) != n)
            break;
        moved += (uint64_t)n;
    }
    check(n == 0, "read the source's fd to EOF, wrote %" PRIu64 " bytes to the destination's", moved);
    close(sfd);
    close(dfd);
    sfd = dfd = -1;
    ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP, &fd) == MDEVMIG_OK && fd == -1;
    check(ok, "source STOP: no fd (%d)", fd);
    ok = mdevmig_dev_set_state(dst, MDEVMIG_STATE_STOP, &fd) == MDEVMIG_OK && fd == -1;
    check(ok, "destination STOP: loaded, no fd (%d)", fd);
    ok = digest(src, a) == 0 && digest(dst, b) == 0 && strcmp(a, b) == 0;
    check(ok, "digests match (%.12s, %.12s)", a, b);
out:
    if (sfd >= 0)
        close(sfd);
    if (dfd >= 0)
        close(dfd);
    mdevmig_dev_free(src);
    mdevmig_dev_free(dst);
    free(buf);
}

/* Data fds held across a state change, each in a child process (a hang is
 * killed by SIGALRM).
 * Forked before this process makes any library call, so the child has
 * everything the library will start. */
enum fd_probe { PROBE_LEAVE_PRE_COPY, PROBE_FREE_IN_PRE_COPY, PROBE_RESUMING_TO_STOP, N_PROBES };
static const char *probe_names[] = {
    "PRE_COPY -> RUNNING while the caller holds the source's data fd",
    "mdevmig_dev_free in PRE_COPY while the caller holds the source's data fd",
    "RESUMING -> STOP while the caller holds the destination's data fd",
};

static int fd_probe(enum fd_probe p)
{
    mdevmig_ctx s = 0, t = 0;
    mdevmig_dev src = 0, dst = 0;
    uint8_t *buf = malloc(BUF_SIZE);
    size_t got;
    int fd = -1, ok;

    alarm(10);
    ok = buf && mdevmig_ctx_new(&s) == 0 && mdevmig_ctx_load_key(s, key_path) == 0 && mdevmig_ctx_new(&t) == 0 &&
         mdevmig_ctx_load_trust(t, trust_path) == 0 && mdevmig_ctx_set_validator(t, NULL) == 0 &&
         mdevmig_dev_open(s, "sim:simgpu/vgpu-64m", &src) == 0 && mdevmig_dev_open(t, "sim:mtty/mtty-2", &dst) == 0;
    if (ok && p != PROBE_RESUMING_TO_STOP) {
        /* The save fills the pipe and blocks writing to it. */
        ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY, &fd) == 0;
        usleep(500000);
        if (ok && p == PROBE_LEAVE_PRE_COPY)
            ok = mdevmig_dev_set_state(src, MDEVMIG_STATE_RUNNING, NULL) == 0;
        if (ok && p == PROBE_FREE_IN_PRE_COPY) {
            ok = mdevmig_dev_free(src) == 0;
            src = 0;
        }
    } else if (ok) {
        mdevmig_dev_free(src);
        ok = mdevmig_dev_open(s, "sim:mtty/mtty-2", &src) == 0 &&
             mdevmig_dev_set_state(dst, MDEVMIG_STATE_RESUMING, &fd) == 0 &&
             mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP_COPY, NULL) == 0;
        while (ok && mdevmig_dev_read(src, buf, BUF_SIZE, &got) == 0 && got > 0)
            ok = mdevmig_dev_write(dst, buf, got) == 0;
        ok = ok && mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP, NULL) == 0 &&
             mdevmig_dev_set_state(dst, MDEVMIG_STATE_STOP, NULL) == 0;
    }
    if (fd >= 0)
        close(fd);
    mdevmig_dev_free(src);
    mdevmig_dev_free(dst);
    mdevmig_ctx_free(s);
    mdevmig_ctx_free(t);
    free(buf);
    return ok ? 0 : 1;
}

static void fd_probe_results(const pid_t *pids)
{
    printf("--- data fds held across a state change\n");
    for (int p = 0; p < N_PROBES; p++) {
        int status = 0;

        if (pids[p] <= 0 || waitpid(pids[p], &status, 0) != pids[p]) {
            check(0, "%s: probe did not run", probe_names[p]);
        } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            check(0, "%s: returns (it still blocked after 10 s)", probe_names[p]);
        } else {
            int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;

            if (ok)
                check(1, "%s: returns", probe_names[p]);
            else
                check(0, "%s: the probe failed (%s %d)", probe_names[p], WIFEXITED(status) ? "exit" : "signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
    }
}

/* Leak probes: a function that returns a string, given a null
 * out-pointer, must return EINVAL and allocate nothing. Each runs in a child
 * whose LeakSanitizer report (at its exit) is captured, not printed; a control
 * child makes the same calls with valid out-pointers and must leak nothing. */
enum leak_probe { LEAK_CONTROL, LEAK_SESSION, LEAK_DESCRIBE, LEAK_CHECK, LEAK_DIGEST, N_LEAK_PROBES };
static const char *leak_names[] = {
    "control: session_new, describe, check, state_digest with out-pointers",
    "mdevmig_session_new(NULL)",
    "mdevmig_dev_describe(dev, NULL)",
    "mdevmig_dev_check(dev, ctx, json, NULL)",
    "mdevmig_dev_state_digest(dev, NULL)",
};

static int leak_probe(enum leak_probe p)
{
    mdevmig_ctx c = 0;
    mdevmig_dev d = 0;
    char *json = NULL, *out[4] = {NULL, NULL, NULL, NULL};
    int s[4] = {0, 0, 0, 0}, want = p == LEAK_CONTROL ? MDEVMIG_OK : MDEVMIG_EINVAL, ok;

    if (mdevmig_ctx_new(&c) != 0 || mdevmig_dev_open(c, "sim:mtty/mtty-1", &d) != 0 ||
        mdevmig_dev_describe(d, &json) != 0)
        return 3;
    if (p == LEAK_CONTROL || p == LEAK_SESSION)
        s[0] = mdevmig_session_new(p == LEAK_CONTROL ? &out[0] : NULL);
    if (p == LEAK_CONTROL || p == LEAK_DESCRIBE)
        s[1] = mdevmig_dev_describe(d, p == LEAK_CONTROL ? &out[1] : NULL);
    if (p == LEAK_CONTROL || p == LEAK_CHECK)
        s[2] = mdevmig_dev_check(d, c, json, p == LEAK_CONTROL ? &out[2] : NULL);
    if (p == LEAK_CONTROL || p == LEAK_DIGEST)
        s[3] = mdevmig_dev_state_digest(d, p == LEAK_CONTROL ? &out[3] : NULL);
    ok = s[p == LEAK_CONTROL ? 0 : p - 1] == want;
    if (p == LEAK_CONTROL)
        ok = s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0;
    for (int i = 0; i < 4; i++)
        mdevmig_string_free(out[i]);
    mdevmig_string_free(json);
    ok = ok && mdevmig_dev_free(d) == 0 && mdevmig_ctx_free(c) == 0;
    return ok ? 0 : 2; /* exit() runs LeakSanitizer */
}

static void leak_probe_results(const pid_t *pids, FILE *const *logs)
{
    printf("--- strings the caller cannot receive (null out-pointers)\n");
#if defined(__SANITIZE_ADDRESS__)
    for (int p = 0; p < N_LEAK_PROBES; p++) {
        char line[512], summary[256] = "";
        int status = 0, leaked = 0;

        if (pids[p] <= 0 || waitpid(pids[p], &status, 0) != pids[p] || !logs[p]) {
            check(0, "%s: probe did not run", leak_names[p]);
            continue;
        }
        rewind(logs[p]);
        while (fgets(line, sizeof line, logs[p])) {
            leaked |= strstr(line, "LeakSanitizer") != NULL;
            if (strncmp(line, "SUMMARY: AddressSanitizer:", 26) == 0)
                snprintf(summary, sizeof summary, "%.*s", (int)strcspn(line + 27, "\n"), line + 27);
        }
        if (!leaked && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            check(0, "%s: %s (child %s %d)", leak_names[p], p == LEAK_CONTROL ? "all OK" : "EINVAL",
                  WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        else if (p == LEAK_CONTROL)
            check(!leaked, "%s: no leak%s%s", leak_names[p], leaked ? ": " : "", summary);
        else
            check(!leaked, "%s -> EINVAL, nothing allocated%s%s", leak_names[p],
                      leaked ? ": " : "", summary);
    }
#else
    (void)pids;
    (void)logs;
    check(1, "skipped: not built with AddressSanitizer (no leak detector)");
#endif
}

/* ---- many threads ------------------------------------------------------- */

#define N_MIGRATORS 8
#define N_HAMMERS 3

static int migrators_done; /* __atomic */
static uint64_t freed_handles[4];

static void *migrator(void *arg)
{
    int i = (int)(intptr_t)arg;
    char sspec[96], dspec[96], label[64];
    /* Even threads: three mtty-2 migrations; odd: one vgpu-64m; every fourth
     * validates in the sandbox. All share the contexts. */
    int gpu = i % 2, iters = gpu ? 1 : 3;
    mdevmig_ctx dctx = (i % 4 == 3 && validator_path) ? sandbox_ctx : dst_ctx;

    for (int k = 0; k < iters; k++) {
        snprintf(sspec, sizeof sspec, "sim:%s,seed=%d", gpu ? "simgpu/vgpu-64m" : "mtty/mtty-2", 100 + 2 * i + k);
        snprintf(dspec, sizeof dspec, "sim:%s,seed=%d", gpu ? "simgpu/vgpu-64m" : "mtty/mtty-2", 200 + 2 * i + k);
        snprintf(label, sizeof label, "thread %d migration %d%s", i, k + 1, dctx == sandbox_ctx ? " (sandbox)" : "");
        migrates(src_ctx, dctx, sspec, dspec, label);
    }
    return NULL;
}

static void *hammer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    long calls = 0, wrong = 0, no_code = 0;
    char detail[160] = "";

    while (!__atomic_load_n(&migrators_done, __ATOMIC_ACQUIRE) || calls < 2000) {
        int dev = rand_r(&seed) & 1;
        const struct api_call *c = dev ? &dev_calls[rand_r(&seed) % N_DEV_CALLS]
                                       : &ctx_calls[rand_r(&seed) % N_CTX_CALLS];
        uint64_t h;
        int s;

        switch (rand_r(&seed) % 3) {
        case 0: h = 0; break;
        case 1: h = (1ull << 60) | ((uint64_t)rand_r(&seed) << 20) | (uint64_t)rand_r(&seed); break;
        default: h = freed_handles[rand_r(&seed) % 4]; break;
        }
        if (h == 0 && c->call == last_error_)
            continue;
        s = c->call(h);
        calls++;
        if (s != MDEVMIG_EBADHANDLE) {
            wrong++;
            snprintf(detail, sizeof detail, "; %s(%#" PRIx64 ") gave %d", c->name, h, s);
        } else if (c->call != last_error_ && !code_is(error_holder(c->call), "usage.bad_handle")) {
            no_code++;
        }
    }
    check(wrong == 0 && no_code == 0, "hammer thread %d: %ld bad-handle calls -> EBADHANDLE, %ld without "
          "usage.bad_handle as the thread's error%s", (int)(intptr_t)arg, calls, no_code, detail);
    return NULL;
}

struct race {
    mdevmig_dev dev;
    long ok, bad, other;
};

/* Uses a device while another thread frees it: OK until the free, then
 * EBADHANDLE; never anything else, never a crash. */
static void *racer(void *arg)
{
    struct race *r = arg;
    uint64_t a, b;

    for (;;) {
        int s1 = mdevmig_dev_precopy_info(r->dev, &a, &b);
        int s2 = mdevmig_dev_data_size(r->dev, &a);

        if (s1 == MDEVMIG_EBADHANDLE && s2 == MDEVMIG_EBADHANDLE) {
            r->bad++;
            break;
        }
        if (s1 == MDEVMIG_OK && s2 == MDEVMIG_OK)
            r->ok++;
        else if (s1 == MDEVMIG_EBADHANDLE || s2 == MDEVMIG_EBADHANDLE)
            r->bad++; /* freed between the two calls */
        else
            r->other++;
    }
    return NULL;
}

static void *free_race(void *arg)
{
    struct race r = {0, 0, 0, 0};
    pthread_t t;
    int opened, freed;

    (void)arg;
    opened = mdevmig_dev_open(src_ctx, "sim:simgpu/vgpu-64m,seed=77", &r.dev) == MDEVMIG_OK &&
             mdevmig_dev_set_state(r.dev, MDEVMIG_STATE_PRE_COPY, NULL) == MDEVMIG_OK;
    if (!check(opened, "free race: a source in PRE_COPY"))
        return NULL;
    pthread_create(&t, NULL, racer, &r);
    usleep(200000);
    freed = mdevmig_dev_free(r.dev); /* abandons the save under the other thread */
    pthread_join(t, NULL);
    check(freed == MDEVMIG_OK && r.ok > 0 && r.bad > 0 && r.other == 0,
          "free race: freed (%s) while another thread used it: %ld OK, then EBADHANDLE; %ld other statuses",
          status_name(freed), r.ok, r.other);
    return NULL;
}

static void test_threads(void)
{
    pthread_t m[N_MIGRATORS], h[N_HAMMERS], f;

    printf("--- threads: %d migrating, %d calling with bad handles, one freeing a device in use\n", N_MIGRATORS,
           N_HAMMERS);
    for (int i = 0; i < 4; i++) {
        mdevmig_ctx c = 0;
        mdevmig_dev d = 0;

        if (i % 2 == 0) {
            mdevmig_ctx_new(&c);
            mdevmig_ctx_free(c);
            freed_handles[i] = c;
        } else {
            mdevmig_dev_open(g_ctx, "sim:mtty/mtty-1", &d);
            mdevmig_dev_free(d);
            freed_handles[i] = d;
        }
    }
    for (int i = 0; i < N_HAMMERS; i++)
        pthread_create(&h[i], NULL, hammer, (void *)(intptr_t)i);
    for (int i = 0; i < N_MIGRATORS; i++)
        pthread_create(&m[i], NULL, migrator, (void *)(intptr_t)i);
    pthread_create(&f, NULL, free_race, NULL);
    for (int i = 0; i < N_MIGRATORS; i++)
        pthread_join(m[i], NULL);
    pthread_join(f, NULL);
    __atomic_store_n(&migrators_done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < N_HAMMERS; i++)
        pthread_join(h[i], NULL);
}

/* ---- main --------------------------------------------------------------- */

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    pid_t probes[N_PROBES], leak_pids[N_LEAK_PROBES] = {0};
    FILE *leak_logs[N_LEAK_PROBES] = {NULL};
    char *nonce = NULL, *nonce2 = NULL, *json = NULL;
    const char *v;
    int major, minor, patch, len = 0, fds_before, fds_after, strict;
    double t0 = now();

    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: abi_test KEY.key TRUST.pub OTHER.pub [VALIDATOR]\n");
        return 2;
    }
    key_path = argv[1];
    trust_path = argv[2];
    other_path = argv[3];
    validator_path = argc == 5 ? argv[4] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);

    fflush(stdout);
    fds_before = count_fds();
    /* Probes in child processes, forked before this process calls the library. */
    for (int p = 0; p < N_PROBES; p++) {
        probes[p] = fork();
        if (probes[p] == 0)
            exit(fd_probe((enum fd_probe)p));
    }
#if defined(__SANITIZE_ADDRESS__)
    for (int p = 0; p < N_LEAK_PROBES; p++) {
        leak_logs[p] = tmpfile();
        leak_pids[p] = leak_logs[p] ? fork() : -1;
        if (leak_pids[p] == 0) {
            dup2(fileno(leak_logs[p]), STDERR_FILENO); /* its sanitizer report, for the parent to read */
            exit(leak_probe((enum leak_probe)p));
        }
    }
#endif

    printf("--- basics\n");
    v = mdevmig_version();
    check(v && sscanf(v, "%d.%d.%d%n", &major, &minor, &patch, &len) == 3 && v[len] == 0,
          "mdevmig_version() is MAJOR.MINOR.PATCH (\"%s\")", v ? v : "(null)");
    mdevmig_string_free(NULL);
    check(1, "mdevmig_string_free(NULL) is a no-op");
    check(mdevmig_session_new(&nonce) == MDEVMIG_OK && nonce && strlen(nonce) == 64 &&
              strspn(nonce, "0123456789abcdef") == 64 && mdevmig_session_new(&nonce2) == MDEVMIG_OK && nonce2 &&
              strcmp(nonce, nonce2) != 0,
          "mdevmig_session_new: 64 hex digits, a new one each time");
    if (!nonce || !nonce2)
        return 1;
    snprintf(g_nonce, sizeof g_nonce, "%s", nonce);
    check(code_is(0, ""), "the thread's last error starts empty");

    src_ctx = new_ctx(key_path, NULL, nonce, 1);
    dst_ctx = new_ctx(NULL, trust_path, nonce, 1);
    sandbox_ctx = validator_path ? new_ctx(NULL, trust_path, nonce, 0) : 0;
    other_ctx = new_ctx(NULL, other_path, nonce, 1);
    session2_ctx = new_ctx(NULL, trust_path, nonce2, 1);
    g_ctx = dst_ctx;
    check(mdevmig_dev_open(g_ctx, "sim:mtty/mtty-2", &g_dev) == MDEVMIG_OK &&
              mdevmig_dev_describe(g_dev, &json) == MDEVMIG_OK,
          "contexts, and a device whose descriptor the checks use");
    g_source_json = json ? json : "{}";

    test_bad_handles();
    test_bad_arguments();
    test_last_errors();
    test_describe_check();
    test_migrations();
    test_data_fds();
    test_threads();
    fd_probe_results(probes);
    leak_probe_results(leak_pids, leak_logs);
    for (int p = 0; p < N_LEAK_PROBES; p++)
        if (leak_logs[p])
            fclose(leak_logs[p]);

    printf("--- teardown\n");
    check(mdevmig_dev_free(g_dev) == MDEVMIG_OK && mdevmig_ctx_free(src_ctx) == MDEVMIG_OK &&
              mdevmig_ctx_free(dst_ctx) == MDEVMIG_OK && mdevmig_ctx_free(other_ctx) == MDEVMIG_OK &&
              mdevmig_ctx_free(session2_ctx) == MDEVMIG_OK &&
              (!sandbox_ctx || mdevmig_ctx_free(sandbox_ctx) == MDEVMIG_OK),
          "every handle freed");
    mdevmig_string_free(json);
    mdevmig_string_free(nonce);
    mdevmig_string_free(nonce2);
    fds_after = count_fds();
    check(fds_before == fds_after, "no file descriptor leaked (%d open before, %d after)", fds_before, fds_after);

    strict = getenv("MDEVMIG_ABI_STRICT") && strcmp(getenv("MDEVMIG_ABI_STRICT"), "1") == 0;
    printf("abi_test: %d ok, %d failed in %.1f s%s\n", n_ok, n_fail + n_xfail + n_xpass, now() - t0,
           strict ? " (strict)" : "");
    return n_fail > 0 || (strict && (n_xfail > 0 || n_xpass > 0)) ? 1 : 0;
}
