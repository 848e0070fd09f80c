//! Reads which interface carries the default route, and what kind of link it is, from procfs
//! and sysfs (both roots configurable so tests supply their own trees). Whatever is missing or
//! unreadable makes the answer more cautious, never an error: no readable route table means no
//! default route. `crate::guard::network::check` judges the result. On the request path
//! ([`read_cached`]) the route and the link state are read for every request, the kind of
//! link once per [`KIND_TTL`] per interface.
//!
//! - The default route is the IPv4 entry of `<proc>/net/route` with destination and mask
//!   `00000000`, flag `RTF_UP`, and the lowest metric. Only when there is none is
//!   `<proc>/net/ipv6_route` consulted (`::/0`, not a reject route, not `lo`); metrics of the two
//!   families are not comparable, and an IPv4 default is what most upstreams are reached by.
//! - The interface is `<sys>/class/net/<name>/`: `operstate` `up` is up; `unknown` (ppp, tun and
//!   some modems report it while working) counts as up when `flags` has `IFF_UP`.
//! - Kind: `wireless/` or `phy80211` or `DEVTYPE=wlan` is wifi; `DEVTYPE=wwan`, a PPP/raw-IP/
//!   phonet link `type`, or a name starting `wwan`, `ppp`, `rmnet`, `ccmni` is cellular; `type`
//!   1 (ARPHRD_ETHER) otherwise is ethernet; everything else (tun, WireGuard, ...) is other.
//!   USB tethering through a phone (`usb0`, RNDIS) looks like ethernet: name it in
//!   `network.metered_interfaces` if it is metered.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::guard::network::{Interface, InterfaceKind, NetState};

pub mod route_get;

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;
const IFF_UP: u32 = 0x1;
const ARPHRD_ETHER: u32 = 1;
/// ARPHRD_PPP, ARPHRD_RAWIP (qmi_wwan, rmnet), ARPHRD_PHONET, ARPHRD_PHONET_PIPE, ARPHRD_CAIF.
const CELLULAR_LINK_TYPES: [u32; 5] = [512, 519, 820, 821, 822];
const CELLULAR_NAME_PREFIXES: [&str; 4] = ["wwan", "ppp", "rmnet", "ccmni"];

/// The network as seen through `proc_root` and `sys_root`, every file read now.
pub fn read(proc_root: &Path, sys_root: &Path) -> NetState {
    read_cached(proc_root, sys_root, &KindCache::default())
}

/// How long [`KindCache`] keeps an interface's kind before reading it again.
pub const KIND_TTL: Duration = Duration::from_secs(10);

/// Interface kinds already read, for the request path: [`read_cached`] reads the route and the
/// link state every time, and what kind of link an interface is (five more files) only once per
/// [`KIND_TTL`]. A name that comes back as another kind of link (a modem re-enumerated as
/// `usb0`) is seen within that time.
#[derive(Debug, Default)]
pub struct KindCache {
    kinds: Mutex<HashMap<String, (Instant, InterfaceKind)>>,
}

/// [`read`], with the interface's kind from `cache` while it is fresh.
pub fn read_cached(proc_root: &Path, sys_root: &Path, cache: &KindCache) -> NetState {
    read_cached_at(proc_root, sys_root, cache, Instant::now())
}

fn read_cached_at(proc_root: &Path, sys_root: &Path, cache: &KindCache, now: Instant) -> NetState {
    state_of(default_route(proc_root), sys_root, cache, now)
}

/// The network as traffic to `destinations` (one host's addresses) would take it: the
/// interface of the first address's route (longest prefix, then lowest metric), in place of
/// the default route's. A registry on the wired LAN is reached over ethernet while the default
/// route is a modem. When no address has a route of its own, the default route's. `None` when
/// the traffic stays on this device (every address loopback or the device's own): no link
/// carries it.
///
/// On the real `/proc` the kernel itself is asked ([`route_get`], as `ip route get` does), so
/// that policy routing (`ip rule`) and every table apply; a tree of files (tests, or a
/// configured root) is read as the main table.
pub fn read_toward(
    proc_root: &Path,
    sys_root: &Path,
    destinations: &[std::net::IpAddr],
) -> Option<NetState> {
    let mut asked = None;
    if is_real_proc(proc_root) {
        let routes: Vec<Option<route_get::KernelRoute>> = destinations
            .iter()
            .map(|ip| route_get::route_to(*ip))
            .collect();
        if !routes.is_empty()
            && routes
                .iter()
                .all(|r| *r == Some(route_get::KernelRoute::OnDevice))
        {
            return None;
        }
        asked = routes.into_iter().find_map(|route| match route? {
            route_get::KernelRoute::Interface(name) => Some(name),
            route_get::KernelRoute::OnDevice => None,
        });
    }
    let name = asked.or_else(|| {
        let v4 = std::fs::read_to_string(proc_root.join("net/route")).unwrap_or_default();
        let v6 = std::fs::read_to_string(proc_root.join("net/ipv6_route")).unwrap_or_default();
        destinations
            .iter()
            .find_map(|ip| match ip {
                std::net::IpAddr::V4(ip) => route_v4(&v4, *ip),
                std::net::IpAddr::V6(ip) => route_v6(&v6, *ip),
            })
            .or_else(|| default_route(proc_root))
    });
    Some(state_of(
        name,
        sys_root,
        &KindCache::default(),
        Instant::now(),
    ))
}

fn is_real_proc(proc_root: &Path) -> bool {
    proc_root == Path::new("/proc")
}

fn state_of(name: Option<String>, sys_root: &Path, cache: &KindCache, now: Instant) -> NetState {
    let Some(name) = name else {
        return NetState {
            default_route: None,
        };
    };
    let dir = sys_root.join("class/net").join(&name);
    let cached = cache.kinds.lock().ok().and_then(|kinds| {
        kinds
            .get(&name)
            .filter(|(read_at, _)| now.duration_since(*read_at) < KIND_TTL)
            .map(|&(_, kind)| kind)
    });
    let kind = cached.unwrap_or_else(|| {
        let kind = link_kind(&dir, &name);
        if let Ok(mut kinds) = cache.kinds.lock() {
            kinds.insert(name.clone(), (now, kind));
        }
        kind
    });
    NetState {
        default_route: Some(Interface {
            up: link_up(&dir),
            kind,
            name,
        }),
    }
}

/// The interface carrying the default route (see the module doc).
fn default_route(proc_root: &Path) -> Option<String> {
    std::fs::read_to_string(proc_root.join("net/route"))
        .ok()
        .and_then(|text| default_route_v4(&text))
        .or_else(|| {
            std::fs::read_to_string(proc_root.join("net/ipv6_route"))
                .ok()
                .and_then(|text| default_route_v6(&text))
        })
}

fn read_file(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// `operstate` `up`, or `unknown` with `IFF_UP` in `flags`.
fn link_up(dir: &Path) -> bool {
    match read_file(dir, "operstate").trim() {
        "up" => true,
        "unknown" => {
            let flags = read_file(dir, "flags");
            parse_hex(flags.trim().trim_start_matches("0x")).unwrap_or(0) & IFF_UP != 0
        }
        _ => false,
    }
}

fn link_kind(dir: &Path, name: &str) -> InterfaceKind {
    let link_type = read_file(dir, "type").trim().parse::<u32>().ok();
    let uevent = read_file(dir, "uevent");
    let devtype = uevent
        .lines()
        .find_map(|line| line.strip_prefix("DEVTYPE="))
        .map(str::trim);
    let wireless_dir = dir.join("wireless").is_dir() || dir.join("phy80211").exists();
    classify(name, link_type, devtype, wireless_dir)
}

/// The kind of link, from what sysfs says about it (see the module doc for the rules).
pub fn classify(
    name: &str,
    link_type: Option<u32>,
    devtype: Option<&str>,
    wireless_dir: bool,
) -> InterfaceKind {
    if wireless_dir || devtype == Some("wlan") {
        return InterfaceKind::Wifi;
    }
    if devtype == Some("wwan")
        || link_type.is_some_and(|t| CELLULAR_LINK_TYPES.contains(&t))
        || CELLULAR_NAME_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return InterfaceKind::Cellular;
    }
    if link_type == Some(ARPHRD_ETHER) {
        return InterfaceKind::Ethernet;
    }
    InterfaceKind::Other
}

/// One line of a route table: interface, destination and mask (IPv4: the 32-bit words as
/// `/proc/net/route` prints them; IPv6: the address and a mask made from the prefix length),
/// prefix length, flags and metric.
struct Route<'a> {
    iface: &'a str,
    destination: u128,
    mask: u128,
    prefix: u32,
    flags: u32,
    metric: u32,
}

impl Route<'_> {
    fn usable(&self) -> bool {
        self.flags & RTF_UP != 0 && self.flags & RTF_REJECT == 0
    }

    fn matches(&self, ip: u128) -> bool {
        ip & self.mask == self.destination & self.mask
    }
}

/// The routes of `/proc/net/route` text (its first line is a header).
fn routes_v4(text: &str) -> impl Iterator<Item = Route<'_>> {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            iface,
            destination,
            _gateway,
            flags,
            _refcnt,
            _use,
            metric,
            mask,
            ..,
        ] = fields.as_slice()
        else {
            return None;
        };
        let mask = parse_hex(mask)?;
        Some(Route {
            iface,
            destination: u128::from(parse_hex(destination)?),
            mask: u128::from(mask),
            prefix: mask.count_ones(),
            flags: parse_hex(flags)?,
            metric: metric.parse().ok()?,
        })
    })
}

/// The routes of `/proc/net/ipv6_route` text.
fn routes_v6(text: &str) -> impl Iterator<Item = Route<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            destination,
            prefix,
            _src,
            _src_len,
            _next_hop,
            metric,
            _ref,
            _use,
            flags,
            iface,
        ] = fields.as_slice()
        else {
            return None;
        };
        let prefix = parse_hex(prefix).filter(|p| *p <= 128)?;
        Some(Route {
            iface,
            destination: u128::from_str_radix(destination, 16).ok()?,
            mask: u128::MAX.checked_shl(128 - prefix).unwrap_or(0),
            prefix,
            flags: parse_hex(flags)?,
            metric: parse_hex(metric)?,
        })
    })
}

/// The interface of the lowest-metric IPv4 default route in `/proc/net/route` text.
pub fn default_route_v4(text: &str) -> Option<String> {
    routes_v4(text)
        .filter(|r| r.destination == 0 && r.mask == 0 && r.flags & RTF_UP != 0)
        .min_by_key(|r| r.metric)
        .map(|r| r.iface.to_string())
}

/// The interface of the lowest-metric IPv6 default route (`::/0`) in `/proc/net/ipv6_route`
/// text, skipping reject routes and loopback.
pub fn default_route_v6(text: &str) -> Option<String> {
    routes_v6(text)
        .filter(|r| r.destination == 0 && r.prefix == 0 && r.usable() && r.iface != "lo")
        .min_by_key(|r| r.metric)
        .map(|r| r.iface.to_string())
}

/// The interface of the route `/proc/net/route` text gives for `ip`: the longest matching
/// prefix that is up and not a reject route, then the lowest metric. The file prints each
/// address and mask as the in-memory (network order) word, so `ip` is compared the same way.
pub fn route_v4(text: &str, ip: std::net::Ipv4Addr) -> Option<String> {
    best_route(routes_v4(text), u128::from(u32::from_le_bytes(ip.octets())))
}

/// The interface of the route `/proc/net/ipv6_route` text gives for `ip` (longest prefix, then
/// lowest metric; reject routes and loopback skipped).
pub fn route_v6(text: &str, ip: std::net::Ipv6Addr) -> Option<String> {
    best_route(routes_v6(text).filter(|r| r.iface != "lo"), u128::from(ip))
}

fn best_route<'a>(routes: impl Iterator<Item = Route<'a>>, ip: u128) -> Option<String> {
    routes
        .filter(|r| r.usable() && r.matches(ip))
        .min_by_key(|r| (std::cmp::Reverse(r.prefix), r.metric))
        .map(|r| r.iface.to_string())
}

fn parse_hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 16).ok()
}

/// Fake `/proc` and `/sys` trees for tests here and of the gates that read them.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    const ROUTE_HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    pub(crate) fn route_line(iface: &str, destination: &str, flags: &str, metric: u32) -> String {
        masked_route_line(iface, destination, "00000000", flags, metric)
    }

    pub(crate) fn masked_route_line(
        iface: &str,
        destination: &str,
        mask: &str,
        flags: &str,
        metric: u32,
    ) -> String {
        format!("{iface}\t{destination}\t0102A8C0\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n")
    }

    pub(crate) struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        pub(crate) fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        pub(crate) fn proc_root(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        pub(crate) fn sys_root(&self) -> PathBuf {
            self.dir.path().join("sys")
        }
        pub(crate) fn routes(&self, lines: &[String]) -> &Self {
            let net = self.proc_root().join("net");
            fs::create_dir_all(&net).expect("mkdir");
            fs::write(
                net.join("route"),
                format!("{ROUTE_HEADER}{}", lines.concat()),
            )
            .expect("write");
            self
        }
        pub(crate) fn ipv6_routes(&self, text: &str) -> &Self {
            let net = self.proc_root().join("net");
            fs::create_dir_all(&net).expect("mkdir");
            fs::write(net.join("ipv6_route"), text).expect("write");
            self
        }
        /// `files`: (relative path, content); a content of `None` makes a directory.
        pub(crate) fn iface(&self, name: &str, files: &[(&str, Option<&str>)]) -> &Self {
            let dir = self.sys_root().join("class/net").join(name);
            fs::create_dir_all(&dir).expect("mkdir");
            for (path, content) in files {
                match content {
                    Some(text) => fs::write(dir.join(path), text).expect("write"),
                    None => fs::create_dir_all(dir.join(path)).expect("mkdir"),
                }
            }
            self
        }
        pub(crate) fn read(&self) -> NetState {
            read(&self.proc_root(), &self.sys_root())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Tree, route_line};
    use super::*;

    fn iface(name: &str, kind: InterfaceKind, up: bool) -> Option<Interface> {
        Some(Interface {
            name: name.into(),
            kind,
            up,
        })
    }

    #[test]
    fn ethernet_up() {
        let tree = Tree::new();
        tree.routes(&[
            route_line("eth0", "0002A8C0", "0001", 100),
            route_line("eth0", "00000000", "0003", 100),
        ])
        .iface(
            "eth0",
            &[
                ("operstate", Some("up\n")),
                ("type", Some("1\n")),
                ("uevent", Some("INTERFACE=eth0\nIFINDEX=2\n")),
            ],
        );
        assert_eq!(
            tree.read().default_route,
            iface("eth0", InterfaceKind::Ethernet, true)
        );
    }

    #[test]
    fn wifi_by_wireless_dir_phy_link_or_devtype() {
        for (name, files) in [
            ("wlan0", vec![("wireless", None)]),
            ("wlp2s0", vec![("phy80211", Some(""))]),
            (
                "wlx0",
                vec![("uevent", Some("DEVTYPE=wlan\nINTERFACE=wlx0\n"))],
            ),
        ] {
            let tree = Tree::new();
            let mut all = vec![("operstate", Some("up")), ("type", Some("1"))];
            all.extend(files);
            tree.routes(&[route_line(name, "00000000", "0003", 600)])
                .iface(name, &all);
            assert_eq!(
                tree.read().default_route,
                iface(name, InterfaceKind::Wifi, true),
                "{name}"
            );
        }
    }

    #[test]
    fn wwan_and_ppp_are_cellular() {
        let tree = Tree::new();
        tree.routes(&[route_line("wwan0", "00000000", "0003", 700)])
            .iface(
                "wwan0",
                &[
                    ("operstate", Some("up")),
                    ("type", Some("519")),
                    ("uevent", Some("DEVTYPE=wwan\n")),
                ],
            );
        assert_eq!(
            tree.read().default_route,
            iface("wwan0", InterfaceKind::Cellular, true)
        );

        // ppp reports operstate "unknown" while working; flags carry IFF_UP.
        let tree = Tree::new();
        tree.routes(&[route_line("ppp0", "00000000", "0001", 0)])
            .iface(
                "ppp0",
                &[
                    ("operstate", Some("unknown")),
                    ("type", Some("512")),
                    ("flags", Some("0x10d1")),
                ],
            );
        assert_eq!(
            tree.read().default_route,
            iface("ppp0", InterfaceKind::Cellular, true)
        );

        // A USB modem in ethernet mode: type 1, but DEVTYPE=wwan.
        let tree = Tree::new();
        tree.routes(&[route_line("usb0", "00000000", "0003", 0)])
            .iface(
                "usb0",
                &[
                    ("operstate", Some("up")),
                    ("type", Some("1")),
                    ("uevent", Some("DEVTYPE=wwan\n")),
                ],
            );
        assert_eq!(
            tree.read().default_route,
            iface("usb0", InterfaceKind::Cellular, true)
        );
    }

    #[test]
    fn no_default_route() {
        let tree = Tree::new();
        tree.routes(&[route_line("eth0", "0002A8C0", "0001", 100)]);
        assert_eq!(tree.read(), NetState::default());
        // Nothing readable at all.
        assert_eq!(Tree::new().read(), NetState::default());
        // A default route that is not RTF_UP does not count.
        let tree = Tree::new();
        tree.routes(&[route_line("eth0", "00000000", "0002", 100)]);
        assert_eq!(tree.read(), NetState::default());
    }

    #[test]
    fn interface_down() {
        let tree = Tree::new();
        tree.routes(&[route_line("eth0", "00000000", "0003", 100)])
            .iface(
                "eth0",
                &[
                    ("operstate", Some("down")),
                    ("type", Some("1")),
                    ("flags", Some("0x1003")),
                ],
            );
        assert_eq!(
            tree.read().default_route,
            iface("eth0", InterfaceKind::Ethernet, false)
        );
        // Missing sysfs entry: unknown kind, and not up.
        let tree = Tree::new();
        tree.routes(&[route_line("eth9", "00000000", "0003", 100)]);
        assert_eq!(
            tree.read().default_route,
            iface("eth9", InterfaceKind::Other, false)
        );
    }

    #[test]
    fn lowest_metric_wins() {
        let tree = Tree::new();
        tree.routes(&[
            route_line("wlan0", "00000000", "0003", 600),
            route_line("eth0", "00000000", "0003", 100),
            route_line("wwan0", "00000000", "0003", 700),
        ])
        .iface("eth0", &[("operstate", Some("up")), ("type", Some("1"))]);
        assert_eq!(
            tree.read().default_route,
            iface("eth0", InterfaceKind::Ethernet, true)
        );
    }

    #[test]
    fn ipv6_default_when_no_ipv4_default() {
        let zero = "00000000000000000000000000000000";
        let text = format!(
            "fe800000000000000000000000000000 40 {zero} 00 {zero} 00000100 00000001 00000000 00000001 eth0\n\
             {zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n\
             {zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n"
        );
        let tree = Tree::new();
        tree.routes(&[])
            .ipv6_routes(&text)
            .iface("wlan0", &[("operstate", Some("up")), ("wireless", None)]);
        assert_eq!(
            tree.read().default_route,
            iface("wlan0", InterfaceKind::Wifi, true)
        );
        // The loopback reject route alone is no default route.
        let only_reject =
            format!("{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n");
        assert_eq!(default_route_v6(&only_reject), None);
    }

    #[test]
    fn the_route_toward_an_address_is_its_longest_prefix() {
        use super::fake::masked_route_line;
        // Default route on the modem (metric 0); the wired LAN 192.168.1.0/24 on eth0, and a
        // narrower 192.168.1.128/25 on eth1 (metric 50) and on eth2 (metric 10); a reject route
        // for 10.0.0.0/8.
        let routes = [
            route_line("wwan0", "00000000", "0003", 0),
            masked_route_line("eth0", "0001A8C0", "00FFFFFF", "0001", 100),
            masked_route_line("eth1", "8001A8C0", "80FFFFFF", "0001", 50),
            masked_route_line("eth2", "8001A8C0", "80FFFFFF", "0001", 10),
            masked_route_line("eth3", "0000000A", "000000FF", "0201", 0),
            masked_route_line("eth4", "0010A8C0", "00FFFFFF", "0000", 0),
        ];
        let text = format!("header\n{}", routes.concat());
        let route = |ip: &str| route_v4(&text, ip.parse().unwrap());
        assert_eq!(route("192.168.1.20").as_deref(), Some("eth0"));
        assert_eq!(route("192.168.1.200").as_deref(), Some("eth2"));
        assert_eq!(
            route("10.1.2.3").as_deref(),
            Some("wwan0"),
            "reject route skipped"
        );
        assert_eq!(
            route("192.168.16.5").as_deref(),
            Some("wwan0"),
            "down route skipped"
        );
        assert_eq!(route("8.8.8.8").as_deref(), Some("wwan0"));
        assert_eq!(route_v4("header\n", "8.8.8.8".parse().unwrap()), None);

        let zero = "00000000000000000000000000000000";
        let v6 = format!(
            "{zero} 00 {zero} 00 {zero} 00000400 00000001 00000000 00000003 wwan0\n\
             fd000000000000000000000000000000 40 {zero} 00 {zero} 00000100 00000001 00000000 00000001 eth0\n\
             {zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n"
        );
        let route6 = |ip: &str| route_v6(&v6, ip.parse().unwrap());
        assert_eq!(route6("fd00::1234").as_deref(), Some("eth0"));
        assert_eq!(route6("2001:db8::1").as_deref(), Some("wwan0"));

        // Read through the trees: the registry on the LAN is judged by eth0's link.
        let tree = Tree::new();
        tree.routes(&routes[..2])
            .iface(
                "eth0",
                &[("operstate", Some("up\n")), ("type", Some("1\n"))],
            )
            .iface(
                "wwan0",
                &[("operstate", Some("up\n")), ("type", Some("519\n"))],
            );
        let toward = |ip: &str| {
            read_toward(&tree.proc_root(), &tree.sys_root(), &[ip.parse().unwrap()])
                .and_then(|state| state.default_route)
        };
        assert_eq!(
            toward("192.168.1.20"),
            iface("eth0", InterfaceKind::Ethernet, true)
        );
        assert_eq!(
            toward("1.1.1.1"),
            iface("wwan0", InterfaceKind::Cellular, true)
        );
    }

    #[test]
    fn classify_table() {
        use InterfaceKind::*;
        let cases = [
            ("eth0", Some(1), None, false, Ethernet),
            ("enp3s0", Some(1), Some("x"), false, Ethernet),
            ("wlan0", Some(1), None, true, Wifi),
            ("wlan0", Some(1), Some("wlan"), false, Wifi),
            ("wwan0", Some(519), Some("wwan"), false, Cellular),
            ("rmnet_data0", Some(519), None, false, Cellular),
            ("ppp0", Some(512), None, false, Cellular),
            ("usb0", Some(1), None, false, Ethernet),
            ("usb0", Some(1), Some("wwan"), false, Cellular),
            ("tun0", Some(65534), None, false, Other),
            ("wg0", Some(65534), Some("wireguard"), false, Other),
        ];
        for (name, link_type, devtype, wireless, kind) in cases {
            assert_eq!(
                classify(name, link_type, devtype, wireless),
                kind,
                "{name} {devtype:?}"
            );
        }
    }

    /// The request path's read: the route and the link state are fresh on every call, the
    /// kind of link is read again only after `KIND_TTL`.
    #[test]
    fn cached_read_keeps_the_kind_for_its_ttl_and_nothing_else() {
        let tree = Tree::new();
        let cache = KindCache::default();
        let start = Instant::now();
        let read = |at: Duration| {
            read_cached_at(&tree.proc_root(), &tree.sys_root(), &cache, start + at).default_route
        };
        tree.routes(&[route_line("usb0", "00000000", "0003", 100)])
            .iface(
                "usb0",
                &[("operstate", Some("up\n")), ("type", Some("1\n"))],
            );
        assert_eq!(
            read(Duration::ZERO),
            iface("usb0", InterfaceKind::Ethernet, true)
        );
        // Re-enumerated as a cellular modem under the same name, and down.
        tree.iface(
            "usb0",
            &[("operstate", Some("down\n")), ("type", Some("519\n"))],
        );
        let second = Duration::from_secs(1);
        assert_eq!(read(second), iface("usb0", InterfaceKind::Ethernet, false));
        assert_eq!(
            read(KIND_TTL),
            iface("usb0", InterfaceKind::Cellular, false)
        );
        // A change of route is seen at once.
        tree.routes(&[]);
        assert_eq!(read(KIND_TTL + second), None);
        tree.routes(&[route_line("wlan0", "00000000", "0003", 600)])
            .iface("wlan0", &[("operstate", Some("up")), ("wireless", None)]);
        assert_eq!(
            read(KIND_TTL + second),
            iface("wlan0", InterfaceKind::Wifi, true)
        );
        // The uncached read agrees.
        assert_eq!(
            tree.read().default_route,
            iface("wlan0", InterfaceKind::Wifi, true)
        );
    }
}
