// The user-assigned managed identity the function app runs as. It reaches storage (host state,
// relay tables/queues/blobs, the deployment package) and Application Insights; its roles are
// granted in rbac.bicep.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity (for identity.userAssignedIdentities and deployment storage).')
output id string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Client (application) id: AzureWebJobsStorage__clientId and the App Insights authentication string.')
output clientId string = identity.properties.clientId

@description('Object id of the service principal: the target of the role assignments.')
output principalId string = identity.properties.principalId
