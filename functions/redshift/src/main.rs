#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::run::<redshift_rotation::Redshift>().await
}
