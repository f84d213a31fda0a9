/*
 * vfio-probe: exercise the VFIO migration v2 uAPI on one mdev, the same kernel
 * path mdevmig uses (legacy container + group API, no iommufd).
 *
 *   vfio-probe <iommu-group> <mdev-uuid> [expected-data-size]
 *
 * Opens /dev/vfio/vfio and /dev/vfio/<group>, sets the TYPE1v2 IOMMU, gets the
 * device fd, queries VFIO_DEVICE_FEATURE MIGRATION, MIG_DEVICE_STATE and
 * MIG_DATA_SIZE, then saves the state once (RUNNING -> STOP_COPY, read the data
 * fd to EOF) and returns the device to RUNNING. Prints key=value lines.
 * Built against the 6.12 uapi <linux/vfio.h> with -D__user= (see build.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

static int failed;

#define DIE(...) do { fprintf(stderr, "vfio-probe: " __VA_ARGS__); \
	fprintf(stderr, ": %s\n", strerror(errno)); exit(1); } while (0)
#define EXPECT(cond, ...) do { if (!(cond)) { failed = 1; \
	fprintf(stderr, "vfio-probe: MISMATCH: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static const char *state_name(uint32_t s)
{
	static const char *n[] = { "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING",
				   "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P" };
	return s < 8 ? n[s] : "?";
}

/* GET (or SET) a device feature whose payload is len bytes at data. */
static int feature(int dev, uint32_t flags, void *data, size_t len)
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

static uint32_t get_state(int dev)
{
	struct vfio_device_feature_mig_state st = { 0 };

	if (feature(dev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
		    &st, sizeof(st)))
		DIE("GET MIG_DEVICE_STATE");
	return st.device_state;
}

static int set_state(int dev, uint32_t state)
{
	struct vfio_device_feature_mig_state st = { .device_state = state, .data_fd = -1 };

	if (feature(dev, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
		    &st, sizeof(st)))
		DIE("SET MIG_DEVICE_STATE %s", state_name(state));
	return st.data_fd;
}

int main(int argc, char **argv)
{
	char path[64];
	long expect = argc > 3 ? atol(argv[3]) : -1;

	if (argc < 3) {
		fprintf(stderr, "usage: %s <iommu-group> <mdev-uuid> [expected-data-size]\n", argv[0]);
		return 2;
	}
	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		DIE("open /dev/vfio/vfio");
	int api = ioctl(container, VFIO_GET_API_VERSION);
	int type1v2 = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
	printf("api_version=%d type1v2=%d\n", api, type1v2);

	snprintf(path, sizeof(path), "/dev/vfio/%s", argv[1]);
	int group = open(path, O_RDWR);
	if (group < 0)
		DIE("open %s", path);
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs))
		DIE("VFIO_GROUP_GET_STATUS");
	EXPECT(gs.flags & VFIO_GROUP_FLAGS_VIABLE, "group %s not viable", argv[1]);
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		DIE("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		DIE("VFIO_SET_IOMMU TYPE1v2");
	int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, argv[2]);
	if (dev < 0)
		DIE("VFIO_GROUP_GET_DEVICE_FD %s", argv[2]);

	struct vfio_device_info info = { .argsz = sizeof(info) };
	if (ioctl(dev, VFIO_DEVICE_GET_INFO, &info))
		DIE("VFIO_DEVICE_GET_INFO");
	printf("group=%s device=%s info_flags=0x%x num_regions=%u num_irqs=%u\n",
	       argv[1], argv[2], info.flags, info.num_regions, info.num_irqs);

	struct vfio_device_feature_migration mig = { 0 };
	if (feature(dev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, &mig, sizeof(mig)))
		DIE("GET MIGRATION");
	printf("migration_flags=0x%llx\n", (unsigned long long)mig.flags);
	EXPECT(mig.flags == (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY),
	       "migration flags 0x%llx, expected 0x7", (unsigned long long)mig.flags);

	uint32_t st = get_state(dev);
	printf("device_state=%u(%s)\n", st, state_name(st));
	EXPECT(st == VFIO_DEVICE_STATE_RUNNING, "fresh device not RUNNING");

	struct vfio_device_feature_mig_data_size ds = { 0 };
	if (feature(dev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &ds, sizeof(ds)))
		DIE("GET MIG_DATA_SIZE");
	printf("mig_data_size=%llu\n", (unsigned long long)ds.stop_copy_length);
	EXPECT(expect < 0 || ds.stop_copy_length == (uint64_t)expect,
	       "mig_data_size %llu, expected %ld", (unsigned long long)ds.stop_copy_length, expect);

	/* Save once: RUNNING -> STOP_COPY (the kernel walks RUNNING->STOP->STOP_COPY). */
	int data = set_state(dev, VFIO_DEVICE_STATE_STOP_COPY);
	if (data < 0) {
		errno = EINVAL;
		DIE("STOP_COPY gave no data fd");
	}
	unsigned char img[4096];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(data, img + total, sizeof(img) - total);
		if (n < 0)
			DIE("read data fd");
		if (n == 0 || total + n == sizeof(img)) {
			total += n;
			break;
		}
		total += n;
	}
	uint64_t magic = 0;
	uint32_t nr_ports = 0;
	if (total >= 24) {
		memcpy(&magic, img, 8);
		memcpy(&nr_ports, img + 16, 4);
	}
	printf("stop_copy_bytes=%zu magic=0x%llx nr_ports=%u\n", total,
	       (unsigned long long)magic, nr_ports);
	EXPECT(expect < 0 || total == (size_t)expect, "read %zu bytes, expected %ld", total, expect);
	EXPECT(magic == 0x7e9d09898c3e2c4eULL, "bad mtty magic");
	close(data);
	set_state(dev, VFIO_DEVICE_STATE_RUNNING); /* STOP_COPY -> STOP -> RUNNING */
	st = get_state(dev);
	printf("device_state_after=%u(%s)\n", st, state_name(st));
	EXPECT(st == VFIO_DEVICE_STATE_RUNNING, "device not RUNNING after save");

	close(dev);
	close(group);
	close(container);
	printf("vfio-probe: %s\n", failed ? "MISMATCH" : "OK");
	return failed;
}
