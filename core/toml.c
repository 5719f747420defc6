/* placeholder: implementation in progress */
typedef int ud_placeholder_toml;
