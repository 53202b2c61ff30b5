variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Deployment name, used in resource names (e.g. prod)."
  type        = string
  default     = "prod"
}

variable "vpc_id" {
  description = "Existing VPC the cluster runs in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two AZs) for the control plane ENIs and the node groups."
  type        = list(string)
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.32"
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (Airflow, serving, CPU training)."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (training pods that request nvidia.com/gpu)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "cpu_nodes" {
  description = "Size of the CPU node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 3, max = 6 }
}

variable "gpu_nodes" {
  description = "Size of the GPU node group; it scales from zero when training asks for a GPU."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 0, max = 2 }
}

variable "oidc_thumbprint" {
  description = "Thumbprint of the EKS OIDC issuer's root CA (AWS no longer checks it for EKS, but the API needs one)."
  type        = string
  default     = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
}

variable "kubernetes_namespace" {
  description = "Namespace of Relay's worker pods (Airflow's KubernetesPodOperator)."
  type        = string
  default     = "relay"
}
