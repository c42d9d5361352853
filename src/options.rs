//! Registry options.

use std::time::Duration;

/// How a registry starts and stops its workers.
///
/// Built with chained setters from [`Options::default`]; checked when the
/// registry is created, so a bad value is refused up front with
/// [`Error::InvalidOptions`](crate::Error::InvalidOptions) rather than
/// misbehaving later.
///
/// ```
/// use gen_registry::Options;
/// use std::time::Duration;
///
/// let options = Options::default()
///     .start_timeout(Duration::from_secs(1))
///     .shutdown_timeout(Duration::from_millis(500));
/// assert_eq!(options.get_start_timeout(), Duration::from_secs(1));
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    start_timeout: Duration,
    shutdown_timeout: Duration,
}

/// GenServer's default call timeout, which GenRegistry also uses for starts.
pub(crate) const FIVE_SECONDS: Duration = Duration::from_secs(5);

impl Default for Options {
    /// A start timeout of 5 s (GenRegistry's default) and a shutdown timeout of
    /// 5 s (OTP's default for a worker).
    fn default() -> Self {
        Options {
            start_timeout: FIVE_SECONDS,
            shutdown_timeout: FIVE_SECONDS,
        }
    }
}

impl Options {
    /// How long a worker's `init` may take before it is cancelled and the start
    /// fails with [`Error::StartTimeout`](crate::Error::StartTimeout).
    ///
    /// ```
    /// # use gen_registry::Options; use std::time::Duration;
    /// let options = Options::default().start_timeout(Duration::from_millis(200));
    /// assert_eq!(options.get_start_timeout(), Duration::from_millis(200));
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long `stop` and `shutdown` wait for a worker's `terminate` before
    /// they abort the worker.
    ///
    /// ```
    /// # use gen_registry::Options; use std::time::Duration;
    /// let options = Options::default().shutdown_timeout(Duration::from_secs(1));
    /// assert_eq!(options.get_shutdown_timeout(), Duration::from_secs(1));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The start timeout.
    ///
    /// ```
    /// # use gen_registry::Options; use std::time::Duration;
    /// assert_eq!(Options::default().get_start_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// The shutdown timeout.
    ///
    /// ```
    /// # use gen_registry::Options; use std::time::Duration;
    /// assert_eq!(Options::default().get_shutdown_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.start_timeout.is_zero() {
            return Err("start_timeout is zero: no init could ever finish in time".into());
        }
        if self.shutdown_timeout.is_zero() {
            return Err(
                "shutdown_timeout is zero: no worker could run its terminate; give it at least a few milliseconds"
                    .into(),
            );
        }
        Ok(())
    }
}
