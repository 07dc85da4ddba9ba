//! Outgoing email: SMTP (lettre) when `GATEHOUSE_SMTP_URL` is set, otherwise the embedded
//! default's outbox, a directory in the data dir where each message is written as an `.eml`
//! file (lettre's file transport).
//!
//! Messages are sent in the background: a request that sends mail answers at once and in
//! the same time whether or not an address has an account. A failed delivery is logged
//! (never with the message, which may hold a link with a token).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP delivery may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

/// The configured way out.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Outbox(..) => "outbox",
        };
        f.debug_struct("Mailer")
            .field("transport", &kind)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// SMTP at `url` (`smtp://user:pass@host:587?tls=required`, `smtps://…`), or the outbox
    /// directory `<data>/outbox`. `from` is the sender (`Name <address>`).
    pub fn new(
        smtp_url: Option<&str>,
        data_dir: &std::path::Path,
        from: &str,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let from: Mailbox = from
            .parse()
            .with_context(|| format!("`GATEHOUSE_MAIL_FROM` is not a mailbox: `{from}`"))?;
        let transport = match smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    // The URL may hold a password: not repeated in the error.
                    .map_err(|_| anyhow::anyhow!("`GATEHOUSE_SMTP_URL` is not a valid SMTP URL"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None => {
                let dir = data_dir.join("outbox");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the outbox `{}`", dir.display()))?;
                // The messages hold sign-in links and reset tokens: the server's user alone
                // may open the directory (and so read them).
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                        .with_context(|| {
                            format!("cannot restrict the outbox `{}`", dir.display())
                        })?;
                }
                Transport::Outbox(AsyncFileTransport::new(&dir), dir)
            }
        };
        Ok(Self { transport, from })
    }

    /// Where the outbox is, when there is one.
    pub fn outbox(&self) -> Option<&std::path::Path> {
        match &self.transport {
            Transport::Outbox(_, dir) => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// Builds a plain-text message.
    fn message(&self, to: &str, subject: &str, body: &str) -> Result<Message, String> {
        let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| format!("cannot build a message: {e}"))
    }

    /// Sends now; the error says why without the message.
    pub async fn send_now(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let msg = self.message(to, subject, body)?;
        match &self.transport {
            Transport::Smtp(t) => t.send(msg).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::Outbox(t, _) => t.send(msg).await.map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    /// Sends in the background; a failure is logged with its `kind` (never the body).
    pub fn send(
        self: &std::sync::Arc<Self>,
        kind: &'static str,
        to: String,
        subject: String,
        body: String,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            match me.send_now(&to, &subject, &body).await {
                Ok(()) => tracing::info!(kind, "mail sent"),
                Err(e) => tracing::error!(kind, error = %e, "cannot send mail"),
            }
        });
    }
}
