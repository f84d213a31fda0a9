/*
 * qmp-vmm: a VMM's side of `mdevmig serve`'s migration regions. It opens a
 * real mdev itself, as QEMU's vfio-pci does (container /dev/vfio/vfio, the
 * device's IOMMU group, the type1v2 IOMMU, VFIO_GROUP_GET_DEVICE_FD), passes
 * the device fd to the service over the QMP socket (SCM_RIGHTS with `getfd`),
 * opens a region over it (`device-open-fd`) and drives the kernel's migration
 * arcs (include/uapi/linux/vfio.h, `enum vfio_device_mig_state`) with
 * `device-set-state`. When a stream starts, the reply carries the region's
 * data fd (SCM_RIGHTS again): the VMM reads the signed envelope from it on a
 * source and writes one into it on a destination, exactly as it would use the
 * kernel's data fd (QEMU's hw/vfio/migration.c); verification, validation and
 * the vendor parsers run in the service, never here.
 *
 * usage:
 *   qmp-vmm -s SOCK [-T OFFSET] save UUID OUTFILE
 *       RUNNING -> STOP_COPY: the envelope read to EOF into OUTFILE; -> STOP
 *       (the save's outcome); -> RUNNING (the VM goes on)
 *   qmp-vmm -s SOCK [-T OFFSET] restore UUID INFILE
 *       RUNNING -> RESUMING: INFILE written into the data fd; -> STOP (verified,
 *       validated and loaded, or refused); -> RUNNING
 *   qmp-vmm -s SOCK [-T OFFSET] migrate SRC_UUID DST_UUID
 *       both at once, as a VMM pair does: a session nonce from the destination
 *       (`session-new`) binds the source's stream; destination RESUMING, source
 *       STOP_COPY, the bytes piped from one data fd into the other, source STOP,
 *       destination STOP (the verdict) and RUNNING. The source stays in STOP.
 *   qmp-vmm -s SOCK [-k BYTES] job-restore UUID INFILE
 *       the service's `restore` job on `vfio:UUID` (the service opens the
 *       device), fed through a pipe passed with `getfd`; waits for JOB_FINISHED.
 *       With -k only the first BYTES are written and the job is left stalled:
 *       qmp-vmm then waits until the service goes away (a kill -9 test).
 *
 *   -s SOCK     the service's Unix socket
 *   -T OFFSET   tamper: flip one bit (xor 0x01) of envelope byte OFFSET in
 *               flight; the destination must refuse the stream
 *   -t SECONDS  how long to wait for any reply or data (default 30)
 *
 * After a refused or failed migration a source is moved back to RUNNING (as
 * QEMU does) and a destination left in ERROR is reset with `device-reset`.
 * Every message is one line of JSON; events are printed and skipped; replies
 * are matched by their "id". Exit status: 0 done, 1 a command failed or the
 * stream was refused, 2 usage. SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/vfio.h>

#define MAX_LINE (64u << 10) /* the service's default message limit */
#define MAX_FDS 16

static int timeout_ms = 30000;
static int64_t tamper_at = -1;

/* ------------------------------------------------------------------ JSON */

/* Just enough JSON to read the service's replies: a value is located by its
 * span in the line, members by their key at the top level of an object. */

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* Past the string starting at p ('"'), or NULL when it does not end. */
static const char *skip_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p != '\0'; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return NULL;
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* Past the value starting at p, or NULL when it is malformed. */
static const char *skip_value(const char *p)
{
    int depth = 0;

    p = ws(p);
    if (*p == '"')
        return skip_string(p);
    if (*p != '{' && *p != '[') {
        const char *s = p;

        while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL)
            p++;
        return p == s ? NULL : p;
    }
    do {
        if (*p == '\0')
            return NULL;
        if (*p == '"') {
            p = skip_string(p);
            if (p == NULL)
                return NULL;
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    } while (depth > 0);
    return p;
}

/* The member `key` of the object at `obj`: its value's start and length.
 * Returns 0, or -1 when there is no such member (or `obj` is no object). */
static int json_get(const char *obj, const char *key, const char **val, size_t *len)
{
    const char *p = ws(obj), *k, *ke, *v, *e;
    size_t klen = strlen(key);

    if (*p != '{')
        return -1;
    p = ws(p + 1);
    if (*p == '}')
        return -1;
    for (;;) {
        k = p;
        ke = skip_string(k);
        if (ke == NULL)
            return -1;
        p = ws(ke);
        if (*p != ':')
            return -1;
        v = ws(p + 1);
        e = skip_value(v);
        if (e == NULL)
            return -1;
        if ((size_t)(ke - k) == klen + 2 && strncmp(k + 1, key, klen) == 0) {
            *val = v;
            *len = (size_t)(e - v);
            return 0;
        }
        p = ws(e);
        if (*p != ',')
            return -1;
        p = ws(p + 1);
    }
}

/* The string member `key` of `obj`, unescaped into out (\uXXXX becomes '?').
 * Returns 0, or -1 when it is missing or not a string. */
static int json_str(const char *obj, const char *key, char *out, size_t size)
{
    const char *v, *p;
    size_t len, n = 0;

    if (json_get(obj, key, &v, &len) != 0 || *v != '"' || size == 0)
        return -1;
    for (p = v + 1; p < v + len - 1 && n + 1 < size; p++) {
        char c = *p;

        if (c == '\\') {
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': c = '?'; p += 4; break;
            default: c = *p; break; /* \" \\ \/ */
            }
        }
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

/* The member `key` of `obj` as raw JSON text (truncated to fit). */
static int json_raw(const char *obj, const char *key, char *out, size_t size)
{
    const char *v;
    size_t len;

    if (json_get(obj, key, &v, &len) != 0 || size == 0)
        return -1;
    if (len >= size)
        len = size - 1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------- QMP */

struct qmp {
    int sock;
    char buf[MAX_LINE + 1];
    size_t len;
    char line[MAX_LINE + 1];
    int fds[MAX_FDS]; /* received with SCM_RIGHTS, oldest first */
    int nfds;
    unsigned next_id;
    char err_code[128]; /* the last error reply */
    char err_desc[1024];
};

/* One recvmsg: bytes onto the buffer, fds onto the list. Returns the byte
 * count, 0 at the end of the stream, -1 on failure or timeout. */
static int qmp_recv(struct qmp *q, int wait_ms)
{
    union {
        char space[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { .iov_base = q->buf + q->len, .iov_len = MAX_LINE - q->len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof(ctl.space) };
    struct pollfd pfd = { .fd = q->sock, .events = POLLIN };
    struct cmsghdr *c;
    ssize_t n;
    int r;

    if (iov.iov_len == 0) {
        fprintf(stderr, "qmp-vmm: a line from the service is longer than %u bytes\n", MAX_LINE);
        return -1;
    }
    do
        r = poll(&pfd, 1, wait_ms);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        fprintf(stderr, "qmp-vmm: nothing from the service in %d ms\n", wait_ms);
        return -1;
    }
    do
        n = recvmsg(q->sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        fprintf(stderr, "qmp-vmm: recvmsg: %s\n", strerror(errno));
        return -1;
    }
    for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (q->nfds < MAX_FDS)
                q->fds[q->nfds++] = fd;
            else
                close(fd);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC)
        fprintf(stderr, "qmp-vmm: warning: fds from the service were truncated\n");
    q->len += (size_t)n;
    return (int)n;
}

/* The next line (without its newline) into q->line. Returns 1, 0 at the end
 * of the stream, -1 on failure. */
static int qmp_line(struct qmp *q, int wait_ms)
{
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);

        if (nl != NULL) {
            size_t n = (size_t)(nl - q->buf);

            memcpy(q->line, q->buf, n);
            q->line[n] = '\0';
            q->len -= n + 1;
            memmove(q->buf, nl + 1, q->len);
            return 1;
        }
        switch (qmp_recv(q, wait_ms)) {
        case 0:
            return 0;
        case -1:
            return -1;
        default:
            break;
        }
    }
}

/* The oldest fd received and not yet taken, or -1. */
static int qmp_take_fd(struct qmp *q)
{
    int fd;

    if (q->nfds == 0)
        return -1;
    fd = q->fds[0];
    memmove(q->fds, q->fds + 1, sizeof(int) * (size_t)(--q->nfds));
    return fd;
}

/* Writes one message and its newline, `fd` attached when >= 0. */
static int qmp_send(struct qmp *q, const char *text, int fd)
{
    size_t len = strlen(text), off = 0;
    char *msgbuf = malloc(len + 1);

    if (msgbuf == NULL)
        return -1;
    memcpy(msgbuf, text, len);
    msgbuf[len++] = '\n';
    while (off < len) {
        union {
            char space[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = { .iov_base = msgbuf + off, .iov_len = len - off };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (off == 0 && fd >= 0) {
            struct cmsghdr *c;

            memset(&ctl, 0, sizeof(ctl));
            msg.msg_control = ctl.space;
            msg.msg_controllen = sizeof(ctl.space);
            c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        n = sendmsg(q->sock, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "qmp-vmm: sendmsg: %s\n", strerror(errno));
            free(msgbuf);
            return -1;
        }
        off += (size_t)n;
    }
    free(msgbuf);
    return 0;
}

/* Prints an event line (events may come between replies; none is needed). */
static void qmp_event(const char *line)
{
    char name[128] = "?";

    json_str(line, "event", name, sizeof(name));
    printf("event %s: %s\n", name, line);
}

/* Runs `execute` with the arguments `fmt` formats (the members of the
 * arguments object, or NULL for none), `pass_fd` attached when >= 0. The
 * reply's return value is copied into `ret` (when given). Returns 0, or -1
 * after an error reply (printed, its code and desc kept in q) or a failure. */
static int qmp_cmd(struct qmp *q, int pass_fd, char *ret, size_t ret_size, const char *execute, const char *fmt, ...)
{
    char args[4096] = "", cmd[4400], id[32], got_id[32];
    const char *v;
    size_t len;
    unsigned my_id = ++q->next_id;

    if (fmt != NULL) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
    }
    snprintf(cmd, sizeof(cmd), "{\"execute\":\"%s\",\"arguments\":{%s},\"id\":%u}", execute, args, my_id);
    snprintf(id, sizeof(id), "%u", my_id);
    q->err_code[0] = q->err_desc[0] = '\0';
    if (qmp_send(q, cmd, pass_fd) != 0)
        return -1;
    for (;;) {
        int r = qmp_line(q, timeout_ms);

        if (r <= 0) {
            fprintf(stderr, "qmp-vmm: %s: %s\n", execute,
                    r == 0 ? "the service closed the connection before replying" : "no reply");
            snprintf(q->err_code, sizeof(q->err_code), "qmp-vmm.no_reply");
            return -1;
        }
        if (json_get(q->line, "event", &v, &len) == 0) {
            qmp_event(q->line);
            continue;
        }
        if (json_raw(q->line, "id", got_id, sizeof(got_id)) != 0) {
            /* A message for no command: the service closing the connection
             * (a timeout, too many fds) says why this way. */
            if (json_get(q->line, "error", &v, &len) == 0) {
                json_str(v, "desc", q->err_desc, sizeof(q->err_desc));
                fprintf(stderr, "qmp-vmm: %s: the service says: %s\n", execute, q->err_desc);
                return -1;
            }
            printf("qmp-vmm: ignoring a message with no id: %s\n", q->line);
            continue;
        }
        if (strcmp(got_id, id) != 0) {
            printf("qmp-vmm: ignoring a reply to id %s: %s\n", got_id, q->line);
            continue;
        }
        if (json_get(q->line, "error", &v, &len) == 0) {
            if (json_str(v, "code", q->err_code, sizeof(q->err_code)) != 0)
                snprintf(q->err_code, sizeof(q->err_code), "?");
            if (json_str(v, "desc", q->err_desc, sizeof(q->err_desc)) != 0)
                snprintf(q->err_desc, sizeof(q->err_desc), "%.1000s", q->line);
            fprintf(stderr, "qmp-vmm: %s: %s\n", execute, q->err_desc);
            return -1;
        }
        if (json_get(q->line, "return", &v, &len) != 0) {
            fprintf(stderr, "qmp-vmm: %s: a reply with neither return nor error: %s\n", execute, q->line);
            return -1;
        }
        if (ret != NULL) {
            if (len >= ret_size) {
                fprintf(stderr, "qmp-vmm: %s: the reply is longer than %zu bytes\n", execute, ret_size);
                return -1;
            }
            memcpy(ret, v, len);
            ret[len] = '\0';
        }
        return 0;
    }
}

/* Connects, reads the greeting and negotiates capabilities. */
static int qmp_connect(struct qmp *q, const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char pkg[128] = "?";
    const char *v;
    size_t len;

    memset(q, 0, sizeof(*q));
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "qmp-vmm: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    q->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->sock < 0 || connect(q->sock, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        fprintf(stderr, "qmp-vmm: connect %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (qmp_line(q, timeout_ms) != 1 || json_get(q->line, "QMP", &v, &len) != 0) {
        fprintf(stderr, "qmp-vmm: no QMP greeting from %s (got: %s)\n", path, q->line);
        return -1;
    }
    if (json_get(v, "version", &v, &len) == 0)
        json_str(v, "package", pkg, sizeof(pkg));
    if (qmp_cmd(q, -1, NULL, 0, "qmp_capabilities", NULL) != 0)
        return -1;
    printf("qmp: %s: %s, capabilities negotiated\n", path, pkg);
    return 0;
}

/* -------------------------------------------------------------- regions */

/* `device-set-state`; a data fd that comes with the reply goes into *data_fd
 * (-1 when none came). Returns 0 or -1. */
static int set_state(struct qmp *q, const char *id, const char *state, int *data_fd)
{
    char ret[1024], now[64] = "?";
    const char *v;
    size_t len;
    int with_fd;

    if (data_fd != NULL)
        *data_fd = -1;
    if (qmp_cmd(q, -1, ret, sizeof(ret), "device-set-state", "\"id\":\"%s\",\"state\":\"%s\"", id, state) != 0)
        return -1;
    json_str(ret, "state", now, sizeof(now));
    with_fd = json_get(ret, "data-fd", &v, &len) == 0 && len == 4 && strncmp(v, "true", 4) == 0;
    if (with_fd) {
        int fd = qmp_take_fd(q);

        if (fd < 0) {
            fprintf(stderr, "qmp-vmm: %s -> %s: the reply says data-fd but no fd came with it\n", id, state);
            return -1;
        }
        if (data_fd != NULL)
            *data_fd = fd;
        else
            close(fd);
        printf("%s: -> %s: now %s, data fd %d\n", id, state, now, fd);
    } else {
        printf("%s: -> %s: now %s\n", id, state, now);
    }
    if (strcmp(now, state) != 0) {
        fprintf(stderr, "qmp-vmm: %s: asked for %s, the region is in %s\n", id, state, now);
        return -1;
    }
    return 0;
}

/* `device-query`: prints the state and the arcs taken. Returns 0 or -1. */
static int query(struct qmp *q, const char *id, char *state, size_t size)
{
    char ret[8192], arcs[4096] = "?", st[64] = "?", flags[256] = "?";

    if (qmp_cmd(q, -1, ret, sizeof(ret), "device-query", "\"id\":\"%s\"", id) != 0)
        return -1;
    json_str(ret, "state", st, sizeof(st));
    json_raw(ret, "arcs", arcs, sizeof(arcs));
    json_raw(ret, "migration-flags", flags, sizeof(flags));
    printf("%s: query: state %s, flags %s, arcs %s\n", id, st, flags, arcs);
    if (state != NULL)
        snprintf(state, size, "%s", st);
    return 0;
}

static int open_region(struct qmp *q, const char *id, const char *fdname, const char *uuid, const char *extra)
{
    char ret[1024], flags[256] = "?", st[64] = "?";

    if (qmp_cmd(q, -1, ret, sizeof(ret), "device-open-fd",
                "\"id\":\"%s\",\"fdname\":\"%s\",\"sysfs\":\"/sys/bus/mdev/devices/%s\"%s", id, fdname, uuid,
                extra) != 0)
        return -1;
    json_raw(ret, "migration-flags", flags, sizeof(flags));
    json_str(ret, "state", st, sizeof(st));
    printf("%s: region open over the passed fd of %s: state %s, flags %s\n", id, uuid, st, flags);
    return 0;
}

static int close_region(struct qmp *q, const char *id)
{
    if (qmp_cmd(q, -1, NULL, 0, "device-close", "\"id\":\"%s\"", id) != 0)
        return -1;
    printf("%s: closed\n", id);
    return 0;
}

/* A destination after a refused stream: the refused STOP leaves the region in
 * ERROR; device-reset (VFIO_DEVICE_RESET) is the way back to RUNNING. */
static int destination_running(struct qmp *q, const char *id)
{
    char st[64] = "?", ret[256], now[64] = "?";

    if (query(q, id, st, sizeof(st)) != 0)
        return -1;
    printf("destination after the refusal: %s\n", st);
    if (strcmp(st, "running") == 0)
        return 0;
    if (qmp_cmd(q, -1, ret, sizeof(ret), "device-reset", "\"id\":\"%s\"", id) != 0)
        return -1;
    json_str(ret, "state", now, sizeof(now));
    printf("destination reset: %s\n", now);
    return strcmp(now, "running") == 0 ? 0 : -1;
}

/* ------------------------------------------------------------- data fds */

/* Waits until fd is ready for `events`. Returns 0, or -1 (timeout, error). */
static int wait_fd(int fd, short events, const char *what)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r;

    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        fprintf(stderr, "qmp-vmm: %s: %s\n", what, r == 0 ? "timed out" : strerror(errno));
        return -1;
    }
    return 0;
}

/* Flips the tamper byte if it lies in buf, which starts at stream offset `at`. */
static void tamper(uint8_t *buf, size_t n, uint64_t at)
{
    if (tamper_at >= 0 && (uint64_t)tamper_at >= at && (uint64_t)tamper_at - at < n) {
        uint8_t *b = buf + (tamper_at - at);

        *b ^= 0x01;
        printf("tampered: envelope byte %" PRId64 " flipped %#04x -> %#04x\n", tamper_at, *b ^ 0x01, *b);
    }
}

/* Writes all of buf to fd. Returns 0, 1 when the reader is gone (EPIPE: a
 * destination whose restore refused the stream), -1 on another failure. */
static int write_all(int fd, const uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t w;

        if (wait_fd(fd, POLLOUT, "data fd write") != 0)
            return -1;
        w = write(fd, buf, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0 && errno == EPIPE)
            return 1;
        if (w < 0) {
            fprintf(stderr, "qmp-vmm: write to the data fd: %s\n", strerror(errno));
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads some of fd. Returns the count, 0 at EOF, -1 on failure. */
static ssize_t read_some(int fd, uint8_t *buf, size_t n)
{
    for (;;) {
        ssize_t r;

        if (wait_fd(fd, POLLIN, "data fd read") != 0)
            return -1;
        r = read(fd, buf, n);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            fprintf(stderr, "qmp-vmm: read from the data fd: %s\n", strerror(errno));
        return r;
    }
}

/* ----------------------------------------------------------------- VFIO */

/* A VFIO device the VMM opened itself: the legacy container and group API
 * with the type1v2 IOMMU, as QEMU's vfio-pci does for an mdev (the same as
 * capi/examples/minivmm.c). */
struct vfio_owned {
    int container, group, device;
};

static int open_vfio(const char *uuid, struct vfio_owned *v)
{
    char path[600], link[512];
    const char *group_id;
    ssize_t n;
    struct vfio_group_status status = { .argsz = sizeof(status) };

    for (const char *p = uuid; *p != '\0'; p++) {
        if (strchr("0123456789abcdefABCDEF-", *p) == NULL) {
            fprintf(stderr, "qmp-vmm: %s is not an mdev uuid\n", uuid);
            return -1;
        }
    }
    snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/iommu_group", uuid);
    n = readlink(path, link, sizeof(link) - 1);
    if (n < 0) {
        fprintf(stderr, "qmp-vmm: readlink %s: %s\n", path, strerror(errno));
        return -1;
    }
    link[n] = '\0';
    group_id = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
    v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (v->container < 0) {
        fprintf(stderr, "qmp-vmm: open /dev/vfio/vfio: %s\n", strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "/dev/vfio/%s", group_id);
    v->group = open(path, O_RDWR | O_CLOEXEC);
    if (v->group < 0) {
        fprintf(stderr, "qmp-vmm: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status) != 0 || !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        fprintf(stderr, "qmp-vmm: group %s is not viable\n", group_id);
        return -1;
    }
    if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container) != 0) {
        fprintf(stderr, "qmp-vmm: VFIO_GROUP_SET_CONTAINER: %s\n", strerror(errno));
        return -1;
    }
    if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
        fprintf(stderr, "qmp-vmm: VFIO_SET_IOMMU TYPE1v2: %s\n", strerror(errno));
        return -1;
    }
    v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, uuid);
    if (v->device < 0) {
        fprintf(stderr, "qmp-vmm: VFIO_GROUP_GET_DEVICE_FD %s: %s\n", uuid, strerror(errno));
        return -1;
    }
    printf("vfio: %s: container fd %d, group %s fd %d, device fd %d\n", uuid, v->container, group_id, v->group,
           v->device);
    return 0;
}

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

/* Opens the mdev, passes its device fd as `fdname` and opens region `id` over
 * it (`extra`: more device-open-fd arguments, each starting with ','). */
static int pass_and_open(struct qmp *q, struct vfio_owned *v, const char *uuid, const char *id, const char *fdname,
                         const char *extra)
{
    if (open_vfio(uuid, v) != 0)
        return -1;
    /* As with QEMU's getfd, the fd travels with the command itself. */
    if (qmp_cmd(q, v->device, NULL, 0, "getfd", "\"fdname\":\"%s\"", fdname) != 0)
        return -1;
    printf("%s: device fd %d passed as %s\n", uuid, v->device, fdname);
    return open_region(q, id, fdname, uuid, extra);
}

/* ---------------------------------------------------------------- modes */

static uint8_t buf[1u << 16];

static int do_save(struct qmp *q, const char *uuid, const char *out)
{
    struct vfio_owned v = { -1, -1, -1 };
    int data = -1, ret = 1, saved = 0;
    FILE *f = NULL;
    uint64_t total = 0;
    ssize_t n;

    if (pass_and_open(q, &v, uuid, "src", "dev", "") != 0)
        goto out;
    f = fopen(out, "wb");
    if (f == NULL) {
        fprintf(stderr, "qmp-vmm: %s: %s\n", out, strerror(errno));
        goto out;
    }
    if (set_state(q, "src", "stop-copy", &data) != 0)
        goto out;
    if (data < 0) {
        fprintf(stderr, "qmp-vmm: no data fd came with STOP_COPY\n");
        goto out;
    }
    while ((n = read_some(data, buf, sizeof(buf))) > 0) {
        tamper(buf, (size_t)n, total);
        if (fwrite(buf, 1, (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "qmp-vmm: writing %s: %s\n", out, strerror(errno));
            goto out;
        }
        total += (uint64_t)n;
    }
    if (n < 0)
        goto out;
    close(data);
    data = -1;
    if (fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "qmp-vmm: closing %s: %s\n", out, strerror(errno));
        goto out;
    }
    f = NULL;
    printf("src: read %" PRIu64 " envelope bytes to EOF into %s\n", total, out);
    if (set_state(q, "src", "stop", NULL) != 0) /* the save's outcome */
        goto out;
    saved = 1;
    if (set_state(q, "src", "running", NULL) != 0) /* the VM goes on */
        goto out;
    if (query(q, "src", NULL, 0) != 0 || close_region(q, "src") != 0)
        goto out;
    printf("saved %s: %" PRIu64 " bytes\n", uuid, total);
    ret = 0;
out:
    if (ret != 0 && !saved)
        fprintf(stderr, "qmp-vmm: the save failed\n");
    if (f != NULL)
        fclose(f);
    if (data >= 0)
        close(data);
    close_vfio(&v);
    return ret;
}

/* Writes INFILE into the destination's data fd. Returns 0, 1 when the
 * service stopped reading (refused), -1 on failure. */
static int feed(int data, FILE *in, uint64_t limit, uint64_t *sent)
{
    size_t n;

    *sent = 0;
    while (*sent < limit && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
        int r;

        if (n > limit - *sent)
            n = (size_t)(limit - *sent);
        tamper(buf, n, *sent);
        r = write_all(data, buf, n);
        if (r != 0) {
            if (r > 0)
                printf("dst: the service stopped reading after %" PRIu64 " bytes (EPIPE): the restore refused the stream\n",
                       *sent);
            return r;
        }
        *sent += n;
    }
    if (ferror(in)) {
        fprintf(stderr, "qmp-vmm: reading the stream: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static int do_restore(struct qmp *q, const char *uuid, const char *in_path)
{
    struct vfio_owned v = { -1, -1, -1 };
    int data = -1, ret = 1;
    FILE *in = fopen(in_path, "rb");
    uint64_t sent = 0;

    if (in == NULL) {
        fprintf(stderr, "qmp-vmm: %s: %s\n", in_path, strerror(errno));
        return 1;
    }
    if (pass_and_open(q, &v, uuid, "dst", "dev", "") != 0)
        goto out;
    if (set_state(q, "dst", "resuming", &data) != 0)
        goto out;
    if (data < 0) {
        fprintf(stderr, "qmp-vmm: no data fd came with RESUMING\n");
        goto out;
    }
    if (feed(data, in, UINT64_MAX, &sent) < 0)
        goto out;
    close(data);
    data = -1;
    printf("dst: wrote %" PRIu64 " envelope bytes into the data fd\n", sent);
    if (set_state(q, "dst", "stop", NULL) != 0) { /* verified, validated, loaded? */
        printf("destination refused the stream: %s: %s\n", q->err_code, q->err_desc);
        if (destination_running(q, "dst") != 0)
            fprintf(stderr, "qmp-vmm: the destination could not be reset to RUNNING\n");
        close_region(q, "dst");
        goto out;
    }
    if (set_state(q, "dst", "running", NULL) != 0)
        goto out;
    if (query(q, "dst", NULL, 0) != 0 || close_region(q, "dst") != 0)
        goto out;
    printf("restored %s: %" PRIu64 " bytes\n", uuid, sent);
    ret = 0;
out:
    if (data >= 0)
        close(data);
    fclose(in);
    close_vfio(&v);
    return ret;
}

static int do_migrate(struct qmp *q, const char *src_uuid, const char *dst_uuid)
{
    struct vfio_owned sv = { -1, -1, -1 }, dv = { -1, -1, -1 };
    char ret_buf[512], nonce[128] = "", extra[256];
    int rfd = -1, wfd = -1, ret = 1, refused = 0, src_open = 0, dst_open = 0;
    uint64_t total = 0, sent = 0;
    ssize_t n;

    /* The destination hands out the session nonce; the source binds its stream to it. */
    if (qmp_cmd(q, -1, ret_buf, sizeof(ret_buf), "session-new", NULL) != 0 ||
        json_str(ret_buf, "nonce", nonce, sizeof(nonce)) != 0)
        goto out;
    printf("session nonce %.16s...\n", nonce);
    snprintf(extra, sizeof(extra), ",\"session\":\"%s\"", nonce);
    if (pass_and_open(q, &dv, dst_uuid, "dst", "dst-dev", extra) != 0)
        goto out;
    dst_open = 1;
    snprintf(extra, sizeof(extra), ",\"bind-session\":\"%s\"", nonce);
    if (pass_and_open(q, &sv, src_uuid, "src", "src-dev", extra) != 0)
        goto out;
    src_open = 1;

    if (set_state(q, "dst", "resuming", &wfd) != 0 || wfd < 0) /* vfio_load_setup */
        goto out;
    if (set_state(q, "src", "stop-copy", &rfd) != 0 || rfd < 0) /* the guest stops */
        goto out;
    while ((n = read_some(rfd, buf, sizeof(buf))) > 0) {
        tamper(buf, (size_t)n, total);
        total += (uint64_t)n;
        if (refused)
            continue; /* drained, so the source's save ends */
        switch (write_all(wfd, buf, (size_t)n)) {
        case 0:
            sent += (uint64_t)n;
            break;
        case 1:
            printf("dst: the service stopped reading after %" PRIu64 " bytes (EPIPE): the restore refused the stream\n",
                   sent);
            refused = 1;
            break;
        default:
            goto out;
        }
    }
    if (n < 0)
        goto out;
    close(rfd);
    rfd = -1;
    close(wfd);
    wfd = -1;
    printf("piped %" PRIu64 " envelope bytes from src to dst (%" PRIu64 " accepted)\n", total, sent);
    if (set_state(q, "src", "stop", NULL) != 0) /* the save's outcome */
        goto out;
    if (set_state(q, "dst", "stop", NULL) != 0) { /* the restore's verdict */
        printf("destination refused the stream: %s: %s\n", q->err_code, q->err_desc);
        goto out;
    }
    if (set_state(q, "dst", "running", NULL) != 0) /* the VM starts on the destination */
        goto out;
    if (query(q, "src", NULL, 0) != 0 || query(q, "dst", NULL, 0) != 0)
        goto out;
    printf("migrated %s -> %s: %" PRIu64 " bytes; source left in STOP, destination RUNNING\n", src_uuid, dst_uuid,
           total);
    ret = 0;
out:
    if (rfd >= 0)
        close(rfd);
    if (wfd >= 0)
        close(wfd);
    if (ret != 0 && src_open) {
        /* The migration failed: the VM runs on at the source (QEMU's way). */
        char st[64] = "?";

        if (query(q, "src", st, sizeof(st)) == 0 && strcmp(st, "running") != 0 &&
            set_state(q, "src", "running", NULL) == 0)
            printf("source back to RUNNING\n");
    }
    if (ret != 0 && dst_open && destination_running(q, "dst") != 0)
        fprintf(stderr, "qmp-vmm: the destination could not be reset to RUNNING\n");
    if (src_open && close_region(q, "src") != 0)
        ret = 1;
    if (dst_open && close_region(q, "dst") != 0)
        ret = 1;
    close_vfio(&sv);
    close_vfio(&dv);
    return ret;
}

/* Waits for the JOB_FINISHED event of job `id`. Returns 0 when it succeeded. */
static int wait_job(struct qmp *q, const char *id)
{
    for (;;) {
        const char *data;
        size_t len;
        char name[64] = "", jid[128] = "";
        int r = qmp_line(q, timeout_ms);

        if (r <= 0) {
            fprintf(stderr, "qmp-vmm: waiting for job %s: %s\n", id, r == 0 ? "the service went away" : "no event");
            return -1;
        }
        if (json_str(q->line, "event", name, sizeof(name)) != 0) {
            printf("qmp-vmm: ignoring: %s\n", q->line);
            continue;
        }
        qmp_event(q->line);
        if (strcmp(name, "JOB_FINISHED") != 0 || json_get(q->line, "data", &data, &len) != 0 ||
            json_str(data, "id", jid, sizeof(jid)) != 0 || strcmp(jid, id) != 0)
            continue;
        if (json_get(data, "ok", &data, &len) == 0 && strncmp(data, "true", 4) == 0) {
            printf("job %s: finished ok\n", id);
            return 0;
        }
        printf("job %s: failed\n", id);
        return -1;
    }
}

static int do_job_restore(struct qmp *q, const char *uuid, const char *in_path, int64_t stall_after)
{
    int p[2] = { -1, -1 }, ret = 1;
    FILE *in = fopen(in_path, "rb");
    uint64_t sent = 0;
    char jobs[8192];

    if (in == NULL) {
        fprintf(stderr, "qmp-vmm: %s: %s\n", in_path, strerror(errno));
        return 1;
    }
    for (const char *c = uuid; *c != '\0'; c++) {
        if (strchr("0123456789abcdefABCDEF-", *c) == NULL) {
            fprintf(stderr, "qmp-vmm: %s is not an mdev uuid\n", uuid);
            goto out;
        }
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        fprintf(stderr, "qmp-vmm: pipe: %s\n", strerror(errno));
        goto out;
    }
    if (qmp_cmd(q, p[0], NULL, 0, "getfd", "\"fdname\":\"stream\"") != 0)
        goto out;
    close(p[0]);
    p[0] = -1;
    if (qmp_cmd(q, -1, NULL, 0, "restore",
                "\"job-id\":\"vmm-restore\",\"device\":\"vfio:%s\",\"fdname\":\"stream\",\"resume\":true", uuid) != 0)
        goto out;
    printf("job vmm-restore: restore of vfio:%s from a pipe started\n", uuid);
    if (feed(p[1], in, stall_after >= 0 ? (uint64_t)stall_after : UINT64_MAX, &sent) != 0)
        goto out;
    if (stall_after >= 0) {
        int r;

        if (qmp_cmd(q, -1, jobs, sizeof(jobs), "query-jobs", NULL) != 0)
            goto out;
        printf("query-jobs: %s\n", jobs);
        printf("stalled after %" PRIu64 " bytes; waiting for the service to go away\n", sent);
        fflush(stdout);
        /* The pipe stays open and silent: the job waits for more. */
        while ((r = qmp_line(q, 3600 * 1000)) == 1)
            printf("qmp-vmm: while stalled: %s\n", q->line);
        if (r == 0) {
            printf("the service went away (connection closed)\n");
            ret = 0;
        }
        goto out;
    }
    close(p[1]);
    p[1] = -1;
    printf("wrote %" PRIu64 " bytes into the job's pipe\n", sent);
    ret = wait_job(q, "vmm-restore") == 0 ? 0 : 1;
out:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    fclose(in);
    return ret;
}

static void usage(void)
{
    fprintf(stderr, "usage: qmp-vmm -s SOCK [-T OFFSET] [-t SECONDS] save UUID OUTFILE\n"
                    "       qmp-vmm -s SOCK [-T OFFSET] [-t SECONDS] restore UUID INFILE\n"
                    "       qmp-vmm -s SOCK [-T OFFSET] [-t SECONDS] migrate SRC_UUID DST_UUID\n"
                    "       qmp-vmm -s SOCK [-k BYTES] [-t SECONDS] job-restore UUID INFILE\n");
}

static int parse_u63(const char *s, int64_t *out)
{
    char *end;
    unsigned long long n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || *s == '-' || n > INT64_MAX)
        return -1;
    *out = (int64_t)n;
    return 0;
}

int main(int argc, char **argv)
{
    static struct qmp q;
    const char *sock = NULL, *mode;
    int64_t stall = -1, secs;
    int opt, ret;

    while ((opt = getopt(argc, argv, "s:T:t:k:")) != -1) {
        switch (opt) {
        case 's':
            sock = optarg;
            continue;
        case 'T':
            if (parse_u63(optarg, &tamper_at) == 0)
                continue;
            break;
        case 'k':
            if (parse_u63(optarg, &stall) == 0)
                continue;
            break;
        case 't':
            if (parse_u63(optarg, &secs) == 0 && secs > 0 && secs < 86400) {
                timeout_ms = (int)secs * 1000;
                continue;
            }
            break;
        default:
            break;
        }
        usage();
        return 2;
    }
    if (sock == NULL || argc - optind != 3) {
        usage();
        return 2;
    }
    mode = argv[optind];
    if (strcmp(mode, "save") != 0 && strcmp(mode, "restore") != 0 && strcmp(mode, "migrate") != 0 &&
        strcmp(mode, "job-restore") != 0) {
        usage();
        return 2;
    }
    /* A write to a data fd whose reader is gone fails with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (qmp_connect(&q, sock) != 0)
        return 1;
    if (strcmp(mode, "save") == 0)
        ret = do_save(&q, argv[optind + 1], argv[optind + 2]);
    else if (strcmp(mode, "restore") == 0)
        ret = do_restore(&q, argv[optind + 1], argv[optind + 2]);
    else if (strcmp(mode, "migrate") == 0)
        ret = do_migrate(&q, argv[optind + 1], argv[optind + 2]);
    else
        ret = do_job_restore(&q, argv[optind + 1], argv[optind + 2], stall);
    if (tamper_at >= 0 && ret == 0)
        printf("tamper: byte %" PRId64 " was not in the stream\n", tamper_at);
    while (q.nfds > 0)
        close(qmp_take_fd(&q));
    close(q.sock);
    return ret;
}
