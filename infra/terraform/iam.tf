# IAM roles for service accounts (IRSA): the worker pods read and write the DVC remote; the serving
# pods (infra/k8s ServiceAccount relay-serving) only read it.
locals {
  oidc_host = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")
  service_accounts = {
    worker  = { name = "relay-worker", namespaces = [var.kubernetes_namespace], write = true }
    serving = { name = "relay-serving", namespaces = ["relay-staging", "relay-production"], write = false }
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.service_accounts
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [for ns in each.value.namespaces : "system:serviceaccount:${ns}:${each.value.name}"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each           = local.service_accounts
  name               = "relay-${var.environment}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[each.key].json
}

data "aws_iam_policy_document" "dvc_access" {
  for_each = local.service_accounts
  statement {
    sid       = "ListDvcBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.dvc.arn]
  }
  statement {
    sid       = "DvcObjects"
    actions   = each.value.write ? ["s3:GetObject", "s3:PutObject"] : ["s3:GetObject"]
    resources = ["${aws_s3_bucket.dvc.arn}/*"]
  }
  statement {
    sid       = "DvcKey"
    actions   = each.value.write ? ["kms:Decrypt", "kms:GenerateDataKey"] : ["kms:Decrypt"]
    resources = [aws_kms_key.relay.arn]
  }
}

resource "aws_iam_role_policy" "dvc_access" {
  for_each = local.service_accounts
  name     = "dvc-remote"
  role     = aws_iam_role.irsa[each.key].id
  policy   = data.aws_iam_policy_document.dvc_access[each.key].json
}
