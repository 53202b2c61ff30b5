output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.relay.name
}

output "dvc_remote_url" {
  description = "Set RELAY_DVC_REMOTE to this."
  value       = "s3://${aws_s3_bucket.dvc.bucket}/dvc"
}

output "ecr_repository_urls" {
  description = "Where CI pushes the Dockerfile's targets (relay-airflow, relay-worker, relay-tfx)."
  value       = { for name, repo in aws_ecr_repository.relay : name => repo.repository_url }
}

output "service_account_role_arns" {
  description = "IRSA role ARNs: annotate the relay-worker and relay-serving ServiceAccounts with these."
  value       = { for name, role in aws_iam_role.irsa : name => role.arn }
}
