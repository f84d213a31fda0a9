/*
 * minivmm: migrates one device from SRC to DST through libmdevmig, the way
 * QEMU's hw/vfio/migration.c drives a kernel VFIO device:
 *
 *   destination  RUNNING -> RESUMING                      (vfio_load_setup)
 *   source       RUNNING -> PRE_COPY                      (vfio_save_setup)
 *   rounds       read until ENOMSG, writing each block to the destination
 *                (vfio_save_iterate); precopy info (vfio_query_precopy_size);
 *                data size (vfio_state_pending_exact); stop when it fits
 *                the budget, after 30 rounds, or when a round moved nothing
 *   source       -> PRE_COPY_P2P                          (P2P devices)
 *                -> STOP_COPY, read to the end            (vfio_save_complete_precopy)
 *                -> STOP
 *   destination  RESUMING -> STOP: the restore's verdict  (vfio_load_cleanup)
 *
 * usage: minivmm [-b BUDGET] [-F] [-T OFFSET] SRC_SPEC DST_SPEC KEY.key TRUST.pub [VALIDATOR]
 *
 *   SRC_SPEC, DST_SPEC  device specs: sim:xe/xe-vf-64m,seed=1,dirty-rate=32M,
 *                       vfio:<mdev uuid>, ...
 *   KEY.key             the source's signing key (PKCS#8 PEM)
 *   TRUST.pub           the destination's trust store (a .pub or a directory)
 *   VALIDATOR           the mdevmig-validator program to run vendor validation
 *                       in; without it, validation runs in this process
 *   -b BUDGET           downtime budget in bytes (K, M, G suffixes; default 4M)
 *   -F                  VFIO fd mode: SRC_SPEC is vfio:<mdev uuid>, and minivmm opens
 *                       the device itself as a VMM does (container /dev/vfio/vfio,
 *                       its IOMMU group, type1v2 IOMMU, VFIO_GROUP_GET_DEVICE_FD)
 *                       and hands the device fd to mdevmig_dev_open_vfio_fd
 *   -T OFFSET           tamper: flip one bit (xor 0x01) of envelope byte OFFSET on
 *                       its way to the destination, which must refuse the stream
 *
 * After a failed or refused migration the source is moved back to RUNNING, as
 * QEMU does. Exit status: 0 migrated (and, for simulated devices, the digests
 * match), 1 anything else. SPDX-License-Identifier: Apache-2.0
 */
#include <mdevmig.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

#define MAX_ROUNDS 30
#define BUF_SIZE (1u << 20)

/* -T: the envelope byte to flip (-1: none), and how many bytes the destination
 * has been sent so far. */
static int64_t tamper_at = -1;
static uint64_t sent;

/* Prints a failed call with the handle's last error (the thread's when the
 * handle was not usable). Returns 0 for MDEVMIG_OK, -1 otherwise. */
static int failed(uint64_t handle, int status, const char *what)
{
    char *code = NULL, *message = NULL;

    if (status == MDEVMIG_OK)
        return 0;
    if (status == MDEVMIG_EBADHANDLE)
        handle = 0;
    if (mdevmig_last_error(handle, &code, &message) == MDEVMIG_OK) {
        fprintf(stderr, "minivmm: %s: status %d: error[%s]: %s\n", what, status, code, message);
        mdevmig_string_free(code);
        mdevmig_string_free(message);
    } else {
        fprintf(stderr, "minivmm: %s: status %d\n", what, status);
    }
    return -1;
}

/* Evaluates a libmdevmig call; on failure reports it and jumps to `out`. */
#define TRY(handle, call)                              \
    do {                                               \
        if (failed((handle), (call), #call) != 0)      \
            goto out;                                  \
    } while (0)

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* "4M" -> 4194304. Returns -1 when `s` is not a byte count. */
static int parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *s == '-')
        return -1;
    switch (*end) {
    case 'G': n <<= 10; /* fall through */
    case 'M': n <<= 10; /* fall through */
    case 'K': n <<= 10; end++; break;
    default: break;
    }
    if (*end != '\0')
        return -1;
    *out = n;
    return 0;
}

/* The destination's move RESUMING -> STOP, where the restore's verdict comes:
 * the stream was verified, validated and loaded, or refused and why. */
static int finish_destination(mdevmig_dev dst)
{
    char *code = NULL, *message = NULL;
    int status = mdevmig_dev_set_state(dst, MDEVMIG_STATE_STOP, NULL);

    if (status == MDEVMIG_OK)
        return 0;
    if (mdevmig_last_error(dst, &code, &message) == MDEVMIG_OK) {
        printf("destination refused the stream: %s: %s\n", code, message);
        mdevmig_string_free(code);
        mdevmig_string_free(message);
    } else {
        printf("destination refused the stream (status %d)\n", status);
    }
    return -1;
}

/* Moves what the source has now to the destination, until the source has no
 * more for now (MDEVMIG_ENOMSG, PRE_COPY) or its stream ends (got == 0,
 * STOP_COPY). Returns 0, or -1 when the source failed or the destination
 * refused the stream (its verdict printed). */
static int pump(mdevmig_dev src, mdevmig_dev dst, uint8_t *buf, uint64_t *moved)
{
    for (;;) {
        size_t got = 0;
        int status = mdevmig_dev_read(src, buf, BUF_SIZE, &got);

        if (status == MDEVMIG_ENOMSG)
            return 0;
        if (failed(src, status, "mdevmig_dev_read(src)") != 0)
            return -1;
        if (got == 0)
            return 0;
        if (tamper_at >= 0 && (uint64_t)tamper_at >= sent && (uint64_t)tamper_at - sent < got) {
            buf[tamper_at - sent] ^= 0x01;
            printf("tampered: envelope byte %" PRId64 " flipped %#04x -> %#04x\n", tamper_at,
                   buf[tamper_at - sent] ^ 0x01, buf[tamper_at - sent]);
        }
        sent += got;
        if (mdevmig_dev_write(dst, buf, got) != MDEVMIG_OK) {
            /* The restore refused the stream; its move to STOP says why. */
            finish_destination(dst);
            return -1;
        }
        *moved += got;
    }
}

/* The state digest of a simulated device, or "n/a" (real devices have none).
 * The caller frees the result with free(). */
static char *digest(mdevmig_dev dev)
{
    char *hex = NULL, *copy;

    if (mdevmig_dev_state_digest(dev, &hex) != MDEVMIG_OK)
        return strdup("n/a");
    copy = strdup(hex);
    mdevmig_string_free(hex);
    return copy;
}

/* A VFIO device opened by the VMM itself (-F): the legacy container and group
 * API with the type1v2 IOMMU, as QEMU's vfio-pci does for an mdev. */
struct vfio_owned {
    int container, group, device;
};

/* Opens the mdev `uuid`: container, group, device fd. Returns 0, or -1 with
 * the reason printed (the fds opened so far stay in `v` for close_vfio). */
static int open_vfio(const char *uuid, struct vfio_owned *v)
{
    char path[600], link[512];
    const char *group_id;
    ssize_t n;
    struct vfio_group_status status = { .argsz = sizeof(status) };

    snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/iommu_group", uuid);
    n = readlink(path, link, sizeof(link) - 1);
    if (n < 0) {
        fprintf(stderr, "minivmm: readlink %s: %s\n", path, strerror(errno));
        return -1;
    }
    link[n] = '\0';
    group_id = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
    v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (v->container < 0) {
        fprintf(stderr, "minivmm: open /dev/vfio/vfio: %s\n", strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "/dev/vfio/%s", group_id);
    v->group = open(path, O_RDWR | O_CLOEXEC);
    if (v->group < 0) {
        fprintf(stderr, "minivmm: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status) != 0 || !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        fprintf(stderr, "minivmm: group %s is not viable\n", group_id);
        return -1;
    }
    if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container) != 0) {
        fprintf(stderr, "minivmm: VFIO_GROUP_SET_CONTAINER: %s\n", strerror(errno));
        return -1;
    }
    if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
        fprintf(stderr, "minivmm: VFIO_SET_IOMMU TYPE1v2: %s\n", strerror(errno));
        return -1;
    }
    v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, uuid);
    if (v->device < 0) {
        fprintf(stderr, "minivmm: VFIO_GROUP_GET_DEVICE_FD %s: %s\n", uuid, strerror(errno));
        return -1;
    }
    printf("vfio fd mode: %s: container fd %d, group %s fd %d, device fd %d\n", uuid, v->container,
           group_id, v->group, v->device);
    return 0;
}

/* Closes what open_vfio opened, the device first. */
static void close_vfio(struct vfio_owned *v)
{
    if (v->device >= 0)
        close(v->device);
    if (v->group >= 0)
        close(v->group);
    if (v->container >= 0)
        close(v->container);
    v->device = v->group = v->container = -1;
}

static const char *state_name(uint32_t state)
{
    static const char *names[] = { "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING",
                                   "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P" };

    return state < sizeof(names) / sizeof(names[0]) ? names[state] : "?";
}

/* After a failed migration the destination is made usable again: a refused
 * restore leaves it in ERROR (the device itself stopped), and
 * mdevmig_dev_reset is the way out, back to RUNNING. */
static int destination_running(mdevmig_dev dst)
{
    uint32_t state = MDEVMIG_STATE_ERROR;

    if (failed(dst, mdevmig_dev_get_state(dst, &state), "mdevmig_dev_get_state(dst)") != 0)
        return -1;
    printf("destination after the failure: %s\n", state_name(state));
    if (state == MDEVMIG_STATE_RUNNING)
        return 0;
    if (failed(dst, mdevmig_dev_reset(dst), "mdevmig_dev_reset(dst)") != 0 ||
        failed(dst, mdevmig_dev_get_state(dst, &state), "mdevmig_dev_get_state(dst)") != 0)
        return -1;
    printf("destination reset: %s\n", state_name(state));
    return state == MDEVMIG_STATE_RUNNING ? 0 : -1;
}

/* After a failed migration the source runs again (QEMU: the VM resumes on the
 * source): RUNNING along the kernel's arcs, or by a reset out of ERROR. */
static int source_running(mdevmig_dev src)
{
    uint32_t state = MDEVMIG_STATE_ERROR;

    if (mdevmig_dev_get_state(src, &state) == MDEVMIG_OK && state == MDEVMIG_STATE_RUNNING)
        return 0;
    if (mdevmig_dev_set_state(src, MDEVMIG_STATE_RUNNING, NULL) != MDEVMIG_OK &&
        failed(src, mdevmig_dev_reset(src), "mdevmig_dev_reset(src)") != 0)
        return -1;
    if (failed(src, mdevmig_dev_get_state(src, &state), "mdevmig_dev_get_state(src)") != 0)
        return -1;
    printf("source back to %s\n", state_name(state));
    return state == MDEVMIG_STATE_RUNNING ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: minivmm [-b BUDGET] [-F] [-T OFFSET] SRC_SPEC DST_SPEC KEY.key TRUST.pub [VALIDATOR]\n");
}

int main(int argc, char **argv)
{
    uint64_t budget = 4u << 20, flags = 0, round_bytes[MAX_ROUNDS], downtime_bytes = 0;
    mdevmig_ctx src_ctx = 0, dst_ctx = 0;
    mdevmig_dev src = 0, dst = 0;
    char *session = NULL, *src_digest = NULL, *dst_digest = NULL;
    const char *validator, *stopped = "max rounds";
    uint8_t *buf = NULL;
    int opt, rounds = 0, ret = 1, fd_mode = 0;
    double t0, stop_at, downtime;
    struct vfio_owned owned = { -1, -1, -1 };
    uint64_t offset;

    while ((opt = getopt(argc, argv, "b:FT:")) != -1) {
        if (opt == 'b' && parse_bytes(optarg, &budget) == 0)
            continue;
        if (opt == 'F') {
            fd_mode = 1;
            continue;
        }
        if (opt == 'T' && parse_bytes(optarg, &offset) == 0 && offset <= INT64_MAX) {
            tamper_at = (int64_t)offset;
            continue;
        }
        usage();
        return 2;
    }
    if (argc - optind != 4 && argc - optind != 5) {
        usage();
        return 2;
    }
    if (fd_mode && strncmp(argv[optind], "vfio:", 5) != 0) {
        fprintf(stderr, "minivmm: -F wants a vfio:<mdev uuid> source, not %s\n", argv[optind]);
        return 2;
    }
    validator = argc - optind == 5 ? argv[optind + 4] : NULL;
    buf = malloc(BUF_SIZE);
    if (buf == NULL) {
        perror("minivmm: malloc");
        return 1;
    }
    printf("libmdevmig %s: %s -> %s, budget %" PRIu64 " bytes, validator %s\n", mdevmig_version(),
           argv[optind], argv[optind + 1], budget, validator ? validator : "in process");

    /* The destination issues the session nonce; the source binds its stream to it. */
    TRY(0, mdevmig_session_new(&session));
    TRY(0, mdevmig_ctx_new(&dst_ctx));
    TRY(dst_ctx, mdevmig_ctx_load_trust(dst_ctx, argv[optind + 3]));
    TRY(dst_ctx, mdevmig_ctx_set_session(dst_ctx, session));
    TRY(dst_ctx, mdevmig_ctx_set_validator(dst_ctx, validator));
    TRY(dst_ctx, mdevmig_dev_open(dst_ctx, argv[optind + 1], &dst));

    TRY(0, mdevmig_ctx_new(&src_ctx));
    TRY(src_ctx, mdevmig_ctx_load_key(src_ctx, argv[optind + 2]));
    TRY(src_ctx, mdevmig_ctx_set_session(src_ctx, session));
    if (fd_mode) {
        /* The VMM owns the device; the library works on a duplicate of its fd. */
        const char *uuid = strrchr(argv[optind], '/') ? strrchr(argv[optind], '/') + 1 : argv[optind] + 5;
        char sysfs[600];

        if (open_vfio(uuid, &owned) != 0)
            goto out;
        snprintf(sysfs, sizeof(sysfs), "/sys/bus/mdev/devices/%s", uuid);
        TRY(src_ctx, mdevmig_dev_open_vfio_fd(src_ctx, owned.device, sysfs, &src));
    } else {
        TRY(src_ctx, mdevmig_dev_open(src_ctx, argv[optind], &src));
    }
    TRY(src, mdevmig_dev_migration_flags(src, &flags));
    printf("source flags:%s%s%s\n", flags & MDEVMIG_MIGRATION_STOP_COPY ? " STOP_COPY" : "",
           flags & MDEVMIG_MIGRATION_P2P ? " P2P" : "", flags & MDEVMIG_MIGRATION_PRE_COPY ? " PRE_COPY" : "");

    t0 = now();
    TRY(dst, mdevmig_dev_set_state(dst, MDEVMIG_STATE_RESUMING, NULL));
    if (flags & MDEVMIG_MIGRATION_PRE_COPY) {
        TRY(src, mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY, NULL));
        while (rounds < MAX_ROUNDS) {
            uint64_t moved = 0, initial = 0, dirty = 0, left = 0;

            if (pump(src, dst, buf, &moved) != 0)                       /* read until ENOMSG */
                goto out;
            TRY(src, mdevmig_dev_precopy_info(src, &initial, &dirty));  /* the device prepares its next round */
            TRY(src, mdevmig_dev_data_size(src, &left));                /* what STOP_COPY would still move */
            round_bytes[rounds++] = moved;
            printf("round %d: %" PRIu64 " bytes; precopy info: initial %" PRIu64 ", dirty %" PRIu64
                   "; data size %" PRIu64 "\n", rounds, moved, initial, dirty, left);
            if (left <= budget) {
                stopped = "within budget";
                break;
            }
        }
        printf("pre-copy: %d round(s) in %.3f s; stopped: %s\n", rounds, now() - t0, stopped);
        if (flags & MDEVMIG_MIGRATION_P2P)
            TRY(src, mdevmig_dev_set_state(src, MDEVMIG_STATE_PRE_COPY_P2P, NULL));
    } else {
        printf("pre-copy: none (the device has no PRE_COPY)\n");
        if (flags & MDEVMIG_MIGRATION_P2P)
            TRY(src, mdevmig_dev_set_state(src, MDEVMIG_STATE_RUNNING_P2P, NULL));
    }

    /* The guest stops: downtime runs from here to the destination's STOP. */
    stop_at = now();
    TRY(src, mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP_COPY, NULL));
    if (pump(src, dst, buf, &downtime_bytes) != 0)                      /* read to the end */
        goto out;
    TRY(src, mdevmig_dev_set_state(src, MDEVMIG_STATE_STOP, NULL));
    if (finish_destination(dst) != 0)
        goto out;
    downtime = now() - stop_at;
    if (tamper_at >= 0 && (uint64_t)tamper_at >= sent)
        printf("tamper: nothing flipped, the stream has only %" PRIu64 " bytes\n", sent);

    printf("rounds:");
    for (int i = 0; i < rounds; i++)
        printf(" %" PRIu64, round_bytes[i]);
    printf("%s\n", rounds ? "" : " none");
    printf("downtime: %" PRIu64 " bytes, %.6f s from STOP_COPY to the destination's STOP\n",
           downtime_bytes, downtime);

    src_digest = digest(src);
    dst_digest = digest(dst);
    printf("source digest:      %s\ndestination digest: %s\n", src_digest, dst_digest);
    if (strcmp(src_digest, "n/a") == 0 || strcmp(dst_digest, "n/a") == 0) {
        printf("digests: n/a\n");
        ret = 0;
    } else if (strcmp(src_digest, dst_digest) == 0) {
        printf("MATCH\n");
        ret = 0;
    } else {
        printf("MISMATCH\n");
    }
    /* The VM starts on the destination. */
    if (failed(dst, mdevmig_dev_set_state(dst, MDEVMIG_STATE_RUNNING, NULL), "destination RUNNING") != 0)
        ret = 1;

out:
    /* A failed or refused migration: the source runs again. */
    if (ret != 0 && src != 0 && source_running(src) != 0)
        fprintf(stderr, "minivmm: the source could not be moved back to RUNNING\n");
    if (ret != 0 && dst != 0 && destination_running(dst) != 0)
        fprintf(stderr, "minivmm: the destination could not be reset to RUNNING\n");
    /* Freeing a device mid-migration abandons it: the source goes back to
     * RUNNING, a destination that was written to is reset. */
    if (src != 0 && failed(0, mdevmig_dev_free(src), "mdevmig_dev_free(src)") != 0)
        ret = 1;
    if (dst != 0 && failed(0, mdevmig_dev_free(dst), "mdevmig_dev_free(dst)") != 0)
        ret = 1;
    if (src_ctx != 0 && failed(0, mdevmig_ctx_free(src_ctx), "mdevmig_ctx_free(src)") != 0)
        ret = 1;
    if (dst_ctx != 0 && failed(0, mdevmig_ctx_free(dst_ctx), "mdevmig_ctx_free(dst)") != 0)
        ret = 1;
    close_vfio(&owned);
    mdevmig_string_free(session);
    free(src_digest);
    free(dst_digest);
    free(buf);
    return ret;
}
