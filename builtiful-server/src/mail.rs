//! Outgoing mail: SMTP through `lettre`, or an outbox folder of `.eml` files when no SMTP
//! server is configured (and in the sandbox), with the message's link logged.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// A plain-text message to one person.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The body.
    pub body: String,
    /// The link the message asks the person to follow (logged by the outbox).
    pub link: Option<String>,
}

/// Sends mail.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// Sends one message.
    async fn send(&self, mail: Mail) -> anyhow::Result<()>;
}

fn build(from: &Mailbox, mail: &Mail) -> anyhow::Result<Message> {
    let to: Mailbox = mail
        .to
        .parse()
        .with_context(|| format!("invalid recipient `{}`", mail.to))?;
    Ok(Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&mail.subject)
        .body(mail.body.clone())?)
}

/// Sends through an SMTP server (`smtp://`, `smtps://`, with credentials in the URL).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The transport holds the SMTP credentials.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for the SMTP server at `url`.
    pub fn new(url: &str, from: Mailbox) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .context("invalid --smtp-url")?
            .build();
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: Mail) -> anyhow::Result<()> {
        let message = build(&self.from, &mail)?;
        self.transport
            .send(message)
            .await
            .context("the SMTP server refused the message")?;
        Ok(())
    }
}

/// Writes each message as an `.eml` file into a folder and logs its link.
#[derive(Debug)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    /// An outbox in `dir` (created if missing).
    pub fn new(dir: &Path, from: Mailbox) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the outbox {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            from,
        })
    }

    /// The folder messages land in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: Mail) -> anyhow::Result<()> {
        let message = build(&self.from, &mail)?;
        let id = AsyncFileTransport::<Tokio1Executor>::new(&self.dir)
            .send(message)
            .await
            .context("cannot write to the outbox")?;
        tracing::info!(
            to = %mail.to,
            subject = %mail.subject,
            link = mail.link.as_deref().unwrap_or(""),
            file = %self.dir.join(format!("{id}.eml")).display(),
            "mail written to the outbox (no SMTP server configured)"
        );
        Ok(())
    }
}
