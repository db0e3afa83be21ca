//! The server side of SOCKS5 (RFC 1928), CONNECT only, no authentication: enough for
//! `curl --socks5-hostname`, browsers and `nc -X 5`. Names are resolved in the project
//! (`socks5h`), never on this machine.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::net::DialError;
use super::Dialer;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// Reply codes.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

/// Where a client asked to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub host: String,
    pub port: u16,
}

/// Serves one client: handshake, connect through the tunnel, then copy both ways.
pub async fn serve<S>(client: &mut S, dialer: &Dialer) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = handshake(client).await?;
    let target = format!("{}:{}", request.host, request.port);
    let addresses = match dialer.resolve(&request.host).await {
        Ok(addresses) => addresses,
        Err(error) => {
            reply(client, HOST_UNREACHABLE).await?;
            return Err(error).with_context(|| format!("SOCKS5 request for {target}"));
        }
    };
    let mut remote = match dialer.dial(&addresses, request.port, 0).await {
        Ok(remote) => remote,
        Err(error) => {
            let code = match error {
                DialError::Refused(_) => CONNECTION_REFUSED,
                DialError::Timeout(..) | DialError::Silent(..) => HOST_UNREACHABLE,
                DialError::Stack(_) => GENERAL_FAILURE,
            };
            reply(client, code).await?;
            return Err(error).with_context(|| format!("SOCKS5 request for {target}"));
        }
    };
    reply(client, SUCCEEDED).await?;
    if let Err(error) = super::relay(client, &mut remote).await {
        tracing::debug!(%error, %target, "proxied connection ended");
    }
    Ok(())
}

/// Reads the greeting and the request; answers the greeting, and refuses what it cannot do.
pub async fn handshake<S>(client: &mut S) -> Result<Request>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let [version, methods] = read_array(client).await?;
    if version != VERSION {
        bail!("not a SOCKS5 client (version {version})");
    }
    let mut offered = vec![0; usize::from(methods)];
    client.read_exact(&mut offered).await?;
    if !offered.contains(&NO_AUTH) {
        client.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        bail!("the SOCKS5 client insists on authentication, which this proxy does not offer");
    }
    client.write_all(&[VERSION, NO_AUTH]).await?;

    let [version, command, _reserved, kind] = read_array(client).await?;
    if version != VERSION {
        bail!("malformed SOCKS5 request (version {version})");
    }
    let host = match kind {
        1 => Ipv4Addr::from(read_array::<_, 4>(client).await?).to_string(),
        3 => {
            let [len] = read_array(client).await?;
            let mut name = vec![0; usize::from(len)];
            client.read_exact(&mut name).await?;
            String::from_utf8(name).context("a SOCKS5 host name that is not UTF-8")?
        }
        4 => Ipv6Addr::from(read_array::<_, 16>(client).await?).to_string(),
        other => {
            reply(client, ADDRESS_TYPE_NOT_SUPPORTED).await?;
            bail!("SOCKS5 address type {other} is not supported");
        }
    };
    let port = u16::from_be_bytes(read_array(client).await?);
    if command != CONNECT {
        reply(client, COMMAND_NOT_SUPPORTED).await?;
        bail!("SOCKS5 command {command} is not supported (only CONNECT)");
    }
    Ok(Request { host, port })
}

async fn reply<S: AsyncWrite + Unpin>(client: &mut S, code: u8) -> Result<()> {
    // The bound address (0.0.0.0:0) is of no use through a tunnel; clients ignore it.
    let message = [VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0];
    client.write_all(&message).await.context("answering the SOCKS5 client")
}

async fn read_array<S: AsyncRead + Unpin, const N: usize>(client: &mut S) -> Result<[u8; N]> {
    let mut buf = [0; N];
    client
        .read_exact(&mut buf)
        .await
        .context("the SOCKS5 client closed the connection mid-handshake")?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(client_bytes: &[u8]) -> (Result<Request>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(client_bytes).await.unwrap();
        let result = handshake(&mut ours).await;
        drop(ours);
        let mut answer = Vec::new();
        theirs.read_to_end(&mut answer).await.unwrap();
        (result, answer)
    }

    #[tokio::test]
    async fn a_named_connect_request_is_read_with_its_port() {
        let mut bytes = vec![5, 1, 0, 5, 1, 0, 3, 3];
        bytes.extend_from_slice(b"api");
        bytes.extend_from_slice(&8080u16.to_be_bytes());

        let (request, answer) = exchange(&bytes).await;

        assert_eq!(
            request.unwrap(),
            Request {
                host: "api".into(),
                port: 8080
            }
        );
        assert_eq!(answer, vec![5, 0]);
    }

    #[tokio::test]
    async fn ipv6_requests_are_read_and_bind_requests_refused() {
        let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
        v6.extend_from_slice(&"fd00::13".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&22u16.to_be_bytes());
        let bind = [5, 1, 0, 5, 2, 0, 1, 10, 0, 0, 1, 0, 22];

        let (request, _) = exchange(&v6).await;
        let (refused, answer) = exchange(&bind).await;

        assert_eq!(request.unwrap().host, "fd00::13");
        assert!(refused.unwrap_err().to_string().contains("only CONNECT"));
        assert_eq!(&answer[..4], &[5, 0, 5, COMMAND_NOT_SUPPORTED]);
    }

    #[tokio::test]
    async fn clients_that_require_authentication_are_refused() {
        let (result, answer) = exchange(&[5, 1, 2]).await;

        assert!(result.is_err());
        assert_eq!(answer, vec![5, NO_ACCEPTABLE_METHOD]);
    }
}
