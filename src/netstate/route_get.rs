//! Asks the kernel which way it would send a packet to one address (`RTM_GETROUTE` over a
//! route netlink socket, what `ip route get ADDR` does), so that every routing rule and table
//! applies: policy routing (`ip rule`), the local table (addresses of this device), VRFs.
//! Reading `/proc/net/route` sees the main table only.
//!
//! One fixed request and one answer, written here with `libc` rather than through the
//! `netlink-packet-route` / `netlink-sys` crates: the message is four fixed headers and two
//! attributes, and every length in the answer is checked before it is read.

use std::net::IpAddr;

/// Where the kernel sends traffic to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRoute {
    /// The address is this device's own (a `local` route, or loopback): no link carries it.
    OnDevice,
    /// Out through this interface.
    Interface(String),
}

use libc::{RTA_DST, RTA_OIF, RTM_GETROUTE, RTM_NEWROUTE, RTN_LOCAL};

/// `struct nlmsghdr`, `struct rtmsg` and `struct rtattr`'s header, as the kernel lays them out.
const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();
const RTMSG_LEN: usize = 12;
const RTA_HDRLEN: usize = 4;
/// `NLM_F_REQUEST` (linux/netlink.h; the libc crate has it on Android only).
const NLM_F_REQUEST: u16 = 1;
const RECEIVE_TIMEOUT_MS: i64 = 500;

/// The route the kernel gives `ip`; `None` when it has none (unreachable) or cannot be asked.
pub fn route_to(ip: IpAddr) -> Option<KernelRoute> {
    let request = request(ip);
    let answer = exchange(&request)?;
    parse(&answer)
}

/// An `RTM_GETROUTE` request for `ip`: header, `rtmsg`, one `RTA_DST` attribute.
fn request(ip: IpAddr) -> Vec<u8> {
    let (family, address): (u8, Vec<u8>) = match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let attribute_len = RTA_HDRLEN + address.len();
    let total = NLMSG_HDRLEN + RTMSG_LEN + attribute_len;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    out.extend_from_slice(&[family, (address.len() * 8) as u8, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    out.extend_from_slice(&RTA_DST.to_ne_bytes());
    out.extend_from_slice(&address);
    out
}

/// Sends `request` on a fresh route netlink socket and returns the first answer.
fn exchange(request: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: plain socket calls on a descriptor this function owns and closes; every buffer
    // passed is valid for the length given.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return None;
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECEIVE_TIMEOUT_MS * 1000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        let mut answer = vec![0u8; 8192];
        let received = if sent == request.len() as isize {
            libc::recv(fd, answer.as_mut_ptr().cast(), answer.len(), 0)
        } else {
            -1
        };
        libc::close(fd);
        let received = usize::try_from(received).ok()?;
        answer.truncate(received);
        Some(answer)
    }
}

/// The route in an answer: `OnDevice` for a local route or the loopback interface, else the
/// output interface's name. An error answer (no route) or anything malformed is `None`.
fn parse(answer: &[u8]) -> Option<KernelRoute> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(answer.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?));
    let length = (u32_at(0)? as usize).min(answer.len());
    if u16_at(4)? != RTM_NEWROUTE || length < NLMSG_HDRLEN + RTMSG_LEN {
        // NLMSG_ERROR (ENETUNREACH and the like) or something else: no route.
        return None;
    }
    let route_type = *answer.get(NLMSG_HDRLEN + 7)?;
    if route_type == RTN_LOCAL {
        return Some(KernelRoute::OnDevice);
    }
    let mut at = NLMSG_HDRLEN + RTMSG_LEN;
    while at + RTA_HDRLEN <= length {
        let attribute_len = u16_at(at)? as usize;
        if attribute_len < RTA_HDRLEN || at + attribute_len > length {
            return None;
        }
        if u16_at(at + 2)? == RTA_OIF && attribute_len >= RTA_HDRLEN + 4 {
            let index = u32_at(at + RTA_HDRLEN)?;
            let name = interface_name(index)?;
            return Some(if name == "lo" {
                KernelRoute::OnDevice
            } else {
                KernelRoute::Interface(name)
            });
        }
        at += (attribute_len + 3) & !3;
    }
    None
}

fn interface_name(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires; on success it
    // holds a NUL-terminated name.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: if_indextoname succeeded, so `name` is NUL-terminated within its length.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default route's interface as `/proc/net/route` names it, if any.
    fn default_interface() -> Option<String> {
        let text = std::fs::read_to_string("/proc/net/route").ok()?;
        super::super::default_route_v4(&text)
    }

    #[test]
    fn the_kernel_answers_for_loopback_local_and_outside_addresses() {
        assert_eq!(
            route_to("127.0.0.1".parse().unwrap()),
            Some(KernelRoute::OnDevice)
        );
        assert_eq!(
            route_to("127.8.9.10".parse().unwrap()),
            Some(KernelRoute::OnDevice)
        );
        // TEST-NET-3: never a route of its own, so the default route's interface (or none).
        let outside = route_to("203.0.113.7".parse().unwrap());
        match default_interface() {
            Some(name) => {
                assert_eq!(outside, Some(KernelRoute::Interface(name)));
                // The address this device sends from is its own: routed locally.
                let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                socket.connect("203.0.113.7:9").unwrap();
                let own = socket.local_addr().unwrap().ip();
                assert_eq!(route_to(own), Some(KernelRoute::OnDevice), "{own}");
            }
            None => assert_eq!(outside, None),
        }
    }

    #[test]
    fn malformed_answers_are_no_route() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0xff; 8]), None);
        // A well-formed header claiming a length past the buffer, then a bogus attribute.
        let mut answer = vec![0u8; NLMSG_HDRLEN + RTMSG_LEN + 4];
        answer[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        answer[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        let at = NLMSG_HDRLEN + RTMSG_LEN;
        answer[at..at + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(parse(&answer), None);
        // An attribute that runs past the end.
        answer[at..at + 2].copy_from_slice(&64u16.to_ne_bytes());
        assert_eq!(parse(&answer), None);
        // A local route.
        answer[NLMSG_HDRLEN + 7] = RTN_LOCAL;
        assert_eq!(parse(&answer), Some(KernelRoute::OnDevice));
    }

    #[test]
    fn the_request_is_what_ip_route_get_sends() {
        let request = request("10.1.2.3".parse().unwrap());
        assert_eq!(request.len(), 16 + 12 + 8);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 36);
        assert_eq!(request[16], libc::AF_INET as u8);
        assert_eq!(request[17], 32);
        assert_eq!(&request[32..36], &[10, 1, 2, 3]);
        let v6 = super::request("2001:db8::1".parse().unwrap());
        assert_eq!(v6.len(), 16 + 12 + 20);
        assert_eq!(v6[17], 128);
    }
}
