// The user-assigned managed identities of the function app; their roles are granted in rbac.bicep.
// - The app identity: what the host and the relay's code run as. It reaches storage (host state,
//   relay tables, queues and payload blobs) and Application Insights, and may read but never
//   write the deployment container.
// - The deployment identity: what the platform uses to store and fetch the deployment package
//   (functionAppConfig.deployment.storage). Its only role is on the deployment container.

@description('Name of the user-assigned managed identity the app runs as.')
param name string

@description('Name of the user-assigned managed identity the platform reaches the deployment container with.')
param deploymentIdentityName string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

resource deploymentIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: deploymentIdentityName
  location: location
  tags: tags
}

@description('Resource id of the app identity (for identity.userAssignedIdentities).')
output id string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Client (application) id: AzureWebJobsStorage__clientId and the App Insights authentication string.')
output clientId string = identity.properties.clientId

@description('Object id of the service principal: the target of the role assignments.')
output principalId string = identity.properties.principalId

@description('Resource id of the deployment identity (functionAppConfig.deployment.storage).')
output deploymentId string = deploymentIdentity.id

@description('Object id of the deployment identity\'s service principal.')
output deploymentPrincipalId string = deploymentIdentity.properties.principalId
