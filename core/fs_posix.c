/* placeholder: implementation in progress */
typedef int ud_placeholder_fs_posix;
