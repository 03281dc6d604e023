#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::run::<postgres_rotation::Postgres>().await
}
