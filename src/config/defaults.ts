/**
 * Defaults the command line needs before any configuration is read, in a module of their own so that
 * `help`, `version` and argument parsing load nothing of the configuration parser.
 */

/** Default location, as in the original. */
export const DEFAULT_CONFIG_PATH = "/etc/flowd-go/conf.yaml";

/** Default control socket (top-level `controlSocket`), under the unit's RuntimeDirectory. */
export const DEFAULT_CONTROL_SOCKET = "/run/flowd-go/control.sock";
