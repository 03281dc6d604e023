use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

use crate::{Rotator, SecretsManager, Settings, Target};

/// The whole `main` of a rotation function: reads the settings, builds the Secrets
/// Manager client and the target once per process, then serves rotation events.
pub async fn run<T: Target>() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env(&T::ENGINE).inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let store = SecretsManager::from_env().await;
    let rotator = Rotator::new(store, T::new(settings.connect.clone()), settings);
    let rotator = &rotator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // Boxed: the nested step futures are too deep for the compiler's layout of `main`.
        Box::pin(rotator.handle(event.payload)).await.map_err(Diagnostic::from)
    }))
    .await
}
