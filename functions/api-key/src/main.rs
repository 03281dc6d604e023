#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::serve(api_key_rotation::ApiKeyRotation::from_env).await
}
