/*
 * mttyctl: poke a real mtty mdev through VFIO, independently of mdevmig (guest tool
 * for tests/kernel/mtty-guest.sh; legacy container + group API, no iommufd).
 *
 *   mttyctl <mdev-uuid> <command> [args] [<command> [args]...]
 *
 * Every invocation opens /dev/vfio/vfio and /dev/vfio/<group> (only one process may
 * hold a group), runs its commands in order and closes everything again. Output is
 * key=value lines on stdout; any failure prints "mttyctl: ..." on stderr, exit 1.
 *
 * Commands (PORT is 0 or 1 = VFIO region 0/1; REG is 0..7 or rx tx ier iir fcr lcr
 * mcr lsr msr scr; every UART access is one byte, as mtty requires):
 *   info                  device info, region sizes, migration flags, state, data size
 *   state                 state=<NAME>
 *   expect-state NAME     fail unless the migration state is NAME (RUNNING, STOP, ...)
 *   w PORT REG VAL        write one byte
 *   r PORT REG            read one byte: p<PORT>.<reg>=0x..
 *   tx PORT TEXT          write TEXT byte by byte to TX (loopback -> RX FIFO; <= 15 bytes)
 *   regs PORT             read IER IIR LCR MCR LSR MSR SCR (reading these consumes nothing)
 *   drain PORT            read RX while LSR.DR is set (consumes the FIFO): p<PORT>.rx=<hex>
 *   save FILE             raw migration data via STOP_COPY into FILE (- = none), then
 *                         back to the state the device was in (RUNNING or STOP)
 *   presave FILE          the same via PRE_COPY: prints precopy info and the bytes read
 *                         before STOP_COPY (device must be RUNNING)
 *   set STATE             SET the migration state (the kernel walks the arcs); a data fd
 *                         it returns is closed, the state stays (as a crashed process
 *                         would leave the device)
 *   reset                 VFIO_DEVICE_RESET (mtty does not advertise it but implements it)
 *
 * Built statically against the 6.12 uapi <linux/vfio.h> with -D__user= (build.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

#define DIE(...) do { fprintf(stderr, "mttyctl: " __VA_ARGS__); \
	if (errno) fprintf(stderr, ": %s", strerror(errno)); \
	fputc('\n', stderr); exit(1); } while (0)
#define BAD(...) do { errno = 0; DIE(__VA_ARGS__); } while (0)

static const char *state_names[] = { "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING",
				     "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P" };
static const char *reg_names[] = { "rx", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr" };

static int dev = -1;
static uint64_t region_off[2];
static uint64_t region_size[2];

static const char *state_name(uint32_t s)
{
	return s < 8 ? state_names[s] : "?";
}

static int feature(uint32_t flags, void *data, size_t len)
{
	uint64_t buf[8] = { 0 };
	struct vfio_device_feature *f = (void *)buf;

	f->argsz = sizeof(*f) + len;
	f->flags = flags;
	memcpy(f->data, data, len);
	if (ioctl(dev, VFIO_DEVICE_FEATURE, f))
		return -1;
	memcpy(data, f->data, len);
	return 0;
}

static uint32_t get_state(void)
{
	struct vfio_device_feature_mig_state st = { 0 };

	if (feature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &st, sizeof(st)))
		DIE("GET MIG_DEVICE_STATE");
	return st.device_state;
}

/* SET the state; returns the data fd (or -1). */
static int set_state(uint32_t state)
{
	struct vfio_device_feature_mig_state st = { .device_state = state, .data_fd = -1 };

	if (feature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &st, sizeof(st)))
		DIE("SET MIG_DEVICE_STATE %s", state_name(state));
	return st.data_fd;
}

static uint32_t parse_state(const char *s)
{
	for (uint32_t i = 0; i < 8; i++)
		if (!strcasecmp(s, state_names[i]))
			return i;
	BAD("unknown state %s", s);
}

static unsigned parse_port(const char *s)
{
	if (strcmp(s, "0") && strcmp(s, "1"))
		BAD("port must be 0 or 1, not %s", s);
	unsigned p = s[0] - '0';
	if (region_size[p] < 8)
		BAD("port %u: region %u is %llu bytes (an mtty-1 has one port)", p, p,
		    (unsigned long long)region_size[p]);
	return p;
}

static unsigned parse_reg(const char *s)
{
	static const char *alias[] = { "tx", "ier", "fcr", "lcr", "mcr", "lsr", "msr", "scr" };
	for (unsigned i = 0; i < 8; i++)
		if (!strcasecmp(s, reg_names[i]) || !strcasecmp(s, alias[i]) ||
		    (!strcasecmp(s, "iir") && i == 2))
			return i;
	char *end;
	unsigned long v = strtoul(s, &end, 0);
	if (*s == 0 || *end || v > 7)
		BAD("bad register %s", s);
	return v;
}

static uint8_t parse_byte(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);
	if (*s == 0 || *end || v > 255)
		BAD("bad byte value %s", s);
	return v;
}

static uint8_t rd(unsigned port, unsigned reg)
{
	uint8_t b = 0;
	if (pread(dev, &b, 1, region_off[port] + reg) != 1)
		DIE("read port %u reg %u", port, reg);
	return b;
}

static void wr(unsigned port, unsigned reg, uint8_t v)
{
	if (pwrite(dev, &v, 1, region_off[port] + reg) != 1)
		DIE("write port %u reg %u", port, reg);
}

static size_t read_fd(int fd, unsigned char *buf, size_t cap, int *enomsg)
{
	size_t total = 0;
	*enomsg = 0;
	for (;;) {
		if (total == cap)
			BAD("migration data larger than %zu bytes", cap);
		ssize_t n = read(fd, buf + total, cap - total);
		if (n < 0 && errno == ENOMSG) {
			*enomsg = 1;
			return total;
		}
		if (n < 0)
			DIE("read data fd");
		if (n == 0)
			return total;
		total += n;
	}
}

static void write_file(const char *path, const unsigned char *buf, size_t n)
{
	if (!strcmp(path, "-"))
		return;
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, n, f) != n || fclose(f))
		DIE("writing %s", path);
}

static void save(const char *path, int precopy)
{
	unsigned char img[4096];
	size_t total = 0;
	int enomsg = 0;
	uint32_t st = get_state();

	if (st != VFIO_DEVICE_STATE_RUNNING && st != VFIO_DEVICE_STATE_STOP)
		BAD("save: device is in %s, want RUNNING or STOP", state_name(st));
	if (precopy) {
		if (st != VFIO_DEVICE_STATE_RUNNING)
			BAD("presave: device is in %s, want RUNNING", state_name(st));
		int fd = set_state(VFIO_DEVICE_STATE_PRE_COPY);
		if (fd < 0)
			BAD("PRE_COPY gave no data fd");
		struct vfio_precopy_info pi = { .argsz = sizeof(pi) };
		if (ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO, &pi))
			DIE("VFIO_MIG_GET_PRECOPY_INFO");
		total = read_fd(fd, img, sizeof(img), &enomsg);
		printf("precopy_initial_bytes=%llu precopy_dirty_bytes=%llu precopy_read=%zu precopy_end=%s\n",
		       (unsigned long long)pi.initial_bytes, (unsigned long long)pi.dirty_bytes, total,
		       enomsg ? "ENOMSG" : "EOF(read returned 0)");
		/* PRE_COPY -> STOP_COPY keeps the same fd (the kernel returns none). */
		int fd2 = set_state(VFIO_DEVICE_STATE_STOP_COPY);
		if (fd2 >= 0)
			close(fd2);
		size_t more = read_fd(fd, img + total, sizeof(img) - total, &enomsg);
		if (enomsg)
			BAD("ENOMSG in STOP_COPY");
		total += more;
		close(fd);
	} else {
		int fd = set_state(VFIO_DEVICE_STATE_STOP_COPY);
		if (fd < 0)
			BAD("STOP_COPY gave no data fd");
		total = read_fd(fd, img, sizeof(img), &enomsg);
		if (enomsg)
			BAD("ENOMSG in STOP_COPY");
		close(fd);
	}
	set_state(st);
	write_file(path, img, total);
	uint64_t magic = 0;
	uint32_t nr_ports = 0;
	if (total >= 24) {
		memcpy(&magic, img, 8);
		memcpy(&nr_ports, img + 16, 4);
	}
	printf("raw_bytes=%zu magic=0x%llx nr_ports=%u state_after=%s\n", total,
	       (unsigned long long)magic, nr_ports, state_name(get_state()));
}

static void info(void)
{
	struct vfio_device_info di = { .argsz = sizeof(di) };
	if (ioctl(dev, VFIO_DEVICE_GET_INFO, &di))
		DIE("VFIO_DEVICE_GET_INFO");
	printf("device_info_flags=0x%x num_regions=%u num_irqs=%u region0_size=%llu region1_size=%llu\n",
	       di.flags, di.num_regions, di.num_irqs, (unsigned long long)region_size[0],
	       (unsigned long long)region_size[1]);
	struct vfio_device_feature_migration mig = { 0 };
	if (feature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, &mig, sizeof(mig)))
		DIE("GET MIGRATION");
	printf("migration_flags=0x%llx (%s%s%s)\n", (unsigned long long)mig.flags,
	       mig.flags & VFIO_MIGRATION_STOP_COPY ? "STOP_COPY" : "",
	       mig.flags & VFIO_MIGRATION_P2P ? "|P2P" : "",
	       mig.flags & VFIO_MIGRATION_PRE_COPY ? "|PRE_COPY" : "");
	struct vfio_device_feature_mig_data_size ds = { 0 };
	if (feature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &ds, sizeof(ds)))
		DIE("GET MIG_DATA_SIZE");
	printf("state=%s mig_data_size=%llu\n", state_name(get_state()),
	       (unsigned long long)ds.stop_copy_length);
}

static void open_device(const char *uuid)
{
	char path[256], link[256];
	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/iommu_group", uuid);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		DIE("readlink %s", path);
	link[n] = 0;
	const char *group_id = basename(link);

	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		DIE("open /dev/vfio/vfio");
	snprintf(path, sizeof(path), "/dev/vfio/%s", group_id);
	int group = open(path, O_RDWR);
	if (group < 0)
		DIE("open %s", path);
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs))
		DIE("VFIO_GROUP_GET_STATUS");
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		BAD("group %s not viable", group_id);
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		DIE("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		DIE("VFIO_SET_IOMMU TYPE1v2");
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (dev < 0)
		DIE("VFIO_GROUP_GET_DEVICE_FD %s", uuid);
	/* The fds stay open until exit; the kernel closes them (device first). */
	for (unsigned i = 0; i < 2; i++) {
		struct vfio_region_info ri = { .argsz = sizeof(ri), .index = i };
		if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ri))
			DIE("VFIO_DEVICE_GET_REGION_INFO %u", i);
		region_off[i] = ri.offset;
		region_size[i] = ri.size;
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s <mdev-uuid> <command> [args] [<command> [args]...]\n"
			"commands: info | state | expect-state NAME | w PORT REG VAL | r PORT REG |\n"
			"          tx PORT TEXT | regs PORT | drain PORT | save FILE | presave FILE |\n"
			"          set STATE | reset\n",
			argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	open_device(argv[1]);
	for (int i = 2; i < argc; i++) {
		const char *c = argv[i];
#define NEED(n) do { if (i + (n) >= argc) BAD("%s needs %d argument(s)", c, n); } while (0)
		if (!strcmp(c, "info")) {
			info();
		} else if (!strcmp(c, "state")) {
			printf("state=%s\n", state_name(get_state()));
		} else if (!strcmp(c, "expect-state")) {
			NEED(1);
			uint32_t want = parse_state(argv[++i]), got = get_state();
			if (got != want)
				BAD("device is in %s, expected %s", state_name(got), state_name(want));
			printf("state=%s\n", state_name(got));
		} else if (!strcmp(c, "w")) {
			NEED(3);
			unsigned p = parse_port(argv[i + 1]), r = parse_reg(argv[i + 2]);
			wr(p, r, parse_byte(argv[i + 3]));
			i += 3;
		} else if (!strcmp(c, "r")) {
			NEED(2);
			unsigned p = parse_port(argv[i + 1]), r = parse_reg(argv[i + 2]);
			printf("p%u.%s=0x%02x\n", p, reg_names[r], rd(p, r));
			i += 2;
		} else if (!strcmp(c, "tx")) {
			NEED(2);
			unsigned p = parse_port(argv[i + 1]);
			const char *t = argv[i + 2];
			if (strlen(t) > 15)
				BAD("tx: at most 15 bytes (a full 16-byte mtty FIFO reads as empty)");
			for (; *t; t++)
				wr(p, 0, (uint8_t)*t);
			i += 2;
		} else if (!strcmp(c, "regs")) {
			NEED(1);
			unsigned p = parse_port(argv[++i]);
			printf("p%u:", p);
			for (unsigned r = 1; r < 8; r++)
				printf(" %s=0x%02x", reg_names[r], rd(p, r));
			printf("\n");
		} else if (!strcmp(c, "drain")) {
			NEED(1);
			unsigned p = parse_port(argv[++i]);
			char text[64] = { 0 };
			unsigned n = 0;
			printf("p%u.rx=", p);
			while ((rd(p, 5) & 0x01) && n < 32) {
				uint8_t b = rd(p, 0);
				printf("%02x", b);
				text[n++] = b >= 0x20 && b < 0x7f ? b : '.';
			}
			printf(" \"%s\" (%u bytes) lsr_after=0x%02x\n", text, n, rd(p, 5));
		} else if (!strcmp(c, "save") || !strcmp(c, "presave")) {
			NEED(1);
			save(argv[++i], c[0] == 'p');
		} else if (!strcmp(c, "set")) {
			NEED(1);
			uint32_t want = parse_state(argv[++i]);
			int fd = set_state(want);
			if (fd >= 0)
				close(fd);
			printf("set: state=%s data_fd=%s\n", state_name(get_state()), fd >= 0 ? "yes" : "no");
		} else if (!strcmp(c, "reset")) {
			if (ioctl(dev, VFIO_DEVICE_RESET))
				DIE("VFIO_DEVICE_RESET");
			printf("reset: state=%s\n", state_name(get_state()));
		} else {
			BAD("unknown command %s", c);
		}
	}
	return 0;
}
