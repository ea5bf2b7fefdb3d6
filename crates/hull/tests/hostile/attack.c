/* What a tenant with root in its zone tries; built static by the tests and copied into the
 * zone. Each verb prints "ok" when the kernel let it through, or "refused <errno name>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

struct vol_args_v2 { long long fd; unsigned long long transid, flags; unsigned long long unused[4]; char name[4040]; };
#define BTRFS_IOC_SUBVOL_CREATE_V2 _IOW(0x94, 24, struct vol_args_v2)

static int report(int rc) {
    if (rc < 0) { printf("refused %s\n", strerrorname_np(errno)); return 1; }
    printf("ok\n");
    return 0;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int n = write(fd, text, strlen(text));
    close(fd);
    return n < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "subvol") && argc == 4) {
        /* subvol DIR NAME: a btrfs subvolume, which escapes the dataset's quota */
        int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (dir < 0) return report(-1);
        struct vol_args_v2 a;
        memset(&a, 0, sizeof a);
        strncpy(a.name, argv[3], sizeof a.name - 1);
        return report(ioctl(dir, BTRFS_IOC_SUBVOL_CREATE_V2, &a));
    }
    if (!strcmp(argv[1], "userns")) {
        /* a user namespace with new mount and cgroup namespaces, and cgroup2 mounted */
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) < 0) return report(-1);
        write_file("/proc/self/setgroups", "deny");
        write_file("/proc/self/uid_map", "0 0 1");
        write_file("/proc/self/gid_map", "0 0 1");
        mkdir("/tmp/cg", 0700);
        return report(mount("none", "/tmp/cg", "cgroup2", 0, NULL));
    }
    if (!strcmp(argv[1], "clone3")) {
        struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_NEWUSER;
        args.exit_signal = 17;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        return report(pid < 0 ? -1 : 0);
    }
    if (!strcmp(argv[1], "io_uring")) {
        char params[120];
        memset(params, 0, sizeof params);
        return report(syscall(SYS_io_uring_setup, 4, params));
    }
    if (!strcmp(argv[1], "fd0")) {
        /* writes through the descriptor zlogin's caller gave as stdin */
        return report(write_file("/proc/self/fd/0", "tenant was here\n"));
    }
    return 2;
}
